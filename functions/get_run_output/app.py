"""GET /jobs/{job_id}/runs/{key}/output"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from scheduler.api.resolver import make_resolver
from scheduler.api.runs import run_output_router

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = make_resolver()
app.include_router(run_output_router)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
