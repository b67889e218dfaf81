"""POST /jobs/{job_id}/runs/{key}/cancel"""

from scheduler.api.handler import api_handler
from scheduler.api.run_routes import cancel_run_router

lambda_handler = api_handler(cancel_run_router)
