"""POST /jobs/{job_id}/backfill"""

from scheduler.api.handler import api_handler
from scheduler.api.run_routes import backfill_router

lambda_handler = api_handler(backfill_router)
