"""GET /jobs/{job_id}"""

from scheduler.api.handler import api_handler
from scheduler.api.job_routes import get_router

lambda_handler = api_handler(get_router)
