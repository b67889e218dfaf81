"""GET /jobs/{job_id}/runs/{key}/output"""

from scheduler.api.handler import api_handler
from scheduler.api.run_routes import run_output_router

lambda_handler = api_handler(run_output_router)
