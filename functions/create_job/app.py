"""POST /jobs"""

from scheduler.api.handler import api_handler
from scheduler.api.job_routes import create_router

lambda_handler = api_handler(create_router)
