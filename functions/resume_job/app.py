"""POST /jobs/{job_id}/resume"""

from scheduler.api.handler import api_handler
from scheduler.api.job_routes import resume_router

lambda_handler = api_handler(resume_router)
