"""GET /jobs"""

from scheduler.api.handler import api_handler
from scheduler.api.job_routes import list_router

lambda_handler = api_handler(list_router)
