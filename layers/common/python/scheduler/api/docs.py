"""OpenAPI document and Swagger UI covering every route of every API function."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

from scheduler.api import jobs, manage, runs
from scheduler.api.resolver import make_resolver

TITLE = "Job scheduler API"
VERSION = "1.0.0"
SECURITY = {"bearer": HTTPBearer(scheme="bearer", bearerFormat="JWT")}


def make_docs_resolver() -> APIGatewayHttpResolver:
    app = make_resolver()
    for router in (
        jobs.create_router,
        jobs.get_router,
        jobs.list_router,
        manage.update_router,
        manage.pause_router,
        manage.resume_router,
        manage.delete_router,
        runs.list_runs_router,
        runs.get_run_router,
        runs.run_output_router,
        runs.run_job_router,
    ):
        app.include_router(router)
    # Swagger UI's script and styles are inlined by powertools: the page needs no internet.
    app.enable_swagger(
        path="/docs",
        title=TITLE,
        version=VERSION,
        security_schemes=SECURITY,  # type: ignore[arg-type]
        security=[{"bearer": []}],
    )

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_document() -> Response[str]:
        return Response(
            status_code=200,
            content_type="application/json",
            body=app.get_openapi_json_schema(
                title=TITLE,
                version=VERSION,
                security_schemes=SECURITY,  # type: ignore[arg-type]
                security=[{"bearer": []}],
            ),
        )

    return app
