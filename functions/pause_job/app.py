"""POST /jobs/{job_id}/pause"""

from scheduler.api.handler import api_handler
from scheduler.api.job_routes import pause_router

lambda_handler = api_handler(pause_router)
