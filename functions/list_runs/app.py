"""GET /jobs/{job_id}/runs"""

from scheduler.api.handler import api_handler
from scheduler.api.run_routes import list_runs_router

lambda_handler = api_handler(list_runs_router)
