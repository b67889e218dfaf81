"""OpenAPI document and Swagger UI covering every route of every API function."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

from scheduler.api import job_routes, run_routes
from scheduler.api.resolver import make_resolver

TITLE = "Job scheduler API"
VERSION = "1.0.0"
SECURITY = {"bearer": HTTPBearer(scheme="bearer", bearerFormat="JWT")}
DESCRIPTION = (
    "Every route but this document needs a bearer token; a job belongs to the token's `sub`. "
    "A request body is JSON, sent as `Content-Type: application/json` (UTF-8; else 415), with "
    "objects and arrays nested at most 32 levels (else 400). Every error has the shape of "
    "`ErrorResponse`, except API Gateway's own answers (`GatewayMessage`: a refused token, a "
    "body over 10 MB). Beyond what the schemas state, a 400 also answers a schedule that does "
    "not parse or never fires, an unknown time zone, a script that does not compile, parameters "
    "over 16 KiB as JSON, a range whose end is not after its start, an unknown query parameter "
    "and a page token this API did not issue."
)


def make_docs_resolver() -> APIGatewayHttpResolver:
    app = make_resolver()
    for router in (
        job_routes.create_router,
        job_routes.get_router,
        job_routes.list_router,
        job_routes.update_router,
        job_routes.pause_router,
        job_routes.resume_router,
        job_routes.delete_router,
        job_routes.preview_router,
        run_routes.list_runs_router,
        run_routes.get_run_router,
        run_routes.run_output_router,
        run_routes.cancel_run_router,
        run_routes.run_job_router,
        run_routes.backfill_router,
    ):
        app.include_router(router)
    # Swagger UI's script and styles are inlined by powertools: the page needs no internet.
    app.enable_swagger(
        path="/docs",
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        security_schemes=SECURITY,  # type: ignore[arg-type]
        security=[{"bearer": []}],
    )

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_route() -> Response[str]:
        return Response(status_code=200, content_type="application/json", body=document(app))

    return app


def document(app: APIGatewayHttpResolver) -> str:
    """The OpenAPI document of `app` (a docs resolver), as /openapi.json serves it."""
    return app.get_openapi_json_schema(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        security_schemes=SECURITY,  # type: ignore[arg-type]
        security=[{"bearer": []}],
    )


def openapi_document() -> str:
    """The API's OpenAPI document, as /openapi.json serves it."""
    return document(make_docs_resolver())
