"""GET /jobs/{job_id}/preview and POST /schedules/preview"""

from scheduler.api.handler import api_handler
from scheduler.api.job_routes import preview_router

lambda_handler = api_handler(preview_router)
