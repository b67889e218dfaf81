"""POST /jobs/{job_id}/run"""

from scheduler.api.handler import api_handler
from scheduler.api.run_routes import run_job_router

lambda_handler = api_handler(run_job_router)
