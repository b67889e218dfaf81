"""GET /jobs/{job_id}/runs/{key}"""

from scheduler.api.handler import api_handler
from scheduler.api.run_routes import get_run_router

lambda_handler = api_handler(get_run_router)
