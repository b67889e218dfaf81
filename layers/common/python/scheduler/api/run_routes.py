"""Routes of the runs API: history, one run, its output, cancel, run now and backfill."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from scheduler import wiring
from scheduler.api.error_responses import responses
from scheduler.api.job_routes import JobId, PageToken, RunKey, caller
from scheduler.errors import (
    JobBusy,
    JobNotFound,
    JobPaused,
    QuotaExceeded,
    RunEnded,
    RunNotFound,
    UnsupportedMediaType,
)
from scheduler.jobs.job_models import BackfillRequest, BackfillResult, RunNowRequest
from scheduler.runs.run_models import CancelRequest, Run, RunPage

list_runs_router = Router()


@list_runs_router.get(
    "/jobs/<job_id>/runs",
    summary="A job's runs, newest first",
    tags=["runs"],
    responses=responses(200, RunPage, JobNotFound),
)
def list_runs(
    job_id: JobId,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    next_token: PageToken = None,
) -> RunPage:
    return wiring.list_runs_service().list(caller(list_runs_router), job_id, limit, next_token)


get_run_router = Router()


@get_run_router.get(
    "/jobs/<job_id>/runs/<key>",
    summary="One run of a job",
    tags=["runs"],
    responses=responses(200, Run, JobNotFound, RunNotFound),
)
def get_run(job_id: JobId, key: RunKey) -> Run:
    return wiring.run_service().get(caller(get_run_router), job_id, key)


run_output_router = Router()


@run_output_router.get(
    "/jobs/<job_id>/runs/<key>/output",
    summary="A run's full output",
    description="Redirects (307) to a link, valid 5 minutes, to the captured output of the run's "
    "last attempt (at most 1 MiB); answers the text itself when it is short enough to be all "
    "in the run's output_tail.",
    tags=["runs"],
    responses={
        **responses(200, None, JobNotFound, RunNotFound),
        200: {"description": "The whole output", "content": {"text/plain": {}}},
        307: {"description": "Redirect to the output object"},
    },
)
def get_run_output(job_id: JobId, key: RunKey) -> Response[str]:
    output = wiring.run_service().output(caller(run_output_router), job_id, key)
    if output.url is not None:
        return Response(status_code=307, headers={"Location": output.url}, body="")
    return Response(status_code=200, content_type="text/plain; charset=utf-8", body=output.text)


cancel_run_router = Router()


@cancel_run_router.post(
    "/jobs/<job_id>/runs/<key>/cancel",
    summary="Cancel a run",
    description="Stops a run that has not ended. A run not yet started never starts; a running "
    "script gets SIGTERM within 10 s (the runner polls for the cancel) and SIGKILL 5 s later; "
    "other runs in the same task keep running. The run ends CANCELLED, with the reason in its "
    "`error`, and is not retried. Cancelling a cancelled run answers it again (200); a run that "
    "ended otherwise answers 409.",
    tags=["runs"],
    responses=responses(
        200, Run, JobNotFound, RunNotFound, RunEnded, JobBusy, UnsupportedMediaType
    ),
)
def cancel_run(job_id: JobId, key: RunKey, body: CancelRequest | None = None) -> Run:
    return wiring.cancel_run_service().cancel(caller(cancel_run_router), job_id, key, body)


run_job_router = Router()


@run_job_router.post(
    "/jobs/<job_id>/run",
    summary="Run the job now",
    description="Starts a run within seconds, through the same queue, executor and runner as "
    "scheduled runs, optionally with its own parameters and a reason (both recorded on the run). "
    "Answers 202 with the run; follow it at its Location. A paused job is refused (409): it "
    "starts no run until it is resumed.",
    tags=["runs"],
    responses=responses(202, Run, JobNotFound, JobPaused, UnsupportedMediaType, QuotaExceeded),
)
def run_job(job_id: JobId, body: RunNowRequest | None = None) -> Response[Run]:
    run = wiring.run_now_service().run_now(caller(run_job_router), job_id, body)
    return Response(
        status_code=202,
        content_type="application/json",
        body=run,
        headers={"Location": f"/jobs/{job_id}/runs/{run.key}"},
    )


backfill_router = Router()


@backfill_router.post(
    "/jobs/<job_id>/backfill",
    summary="Run the occurrences of a past range",
    description="Runs the job's occurrences between `from` and `to` (in the past, at most 100) "
    "now, through the normal pipeline, each a BACKFILL run keyed by its own second. An "
    "occurrence that already has a run is left alone, so a backfill fills gaps and can be "
    "repeated. `dry_run` lists what would run. Refused for a job that forbids overlap (400) "
    "and for a paused job (409).",
    tags=["runs"],
    responses=responses(
        200, BackfillResult, JobNotFound, JobPaused, UnsupportedMediaType, QuotaExceeded
    ),
)
def backfill_job(job_id: JobId, body: BackfillRequest) -> BackfillResult:
    return wiring.run_now_service().backfill(caller(backfill_router), job_id, body)
