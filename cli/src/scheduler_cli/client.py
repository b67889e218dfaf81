"""The API over HTTP: each call checked against the models generated from the OpenAPI document,
each failure turned into an exit code."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from scheduler_cli import __version__
from scheduler_cli.api_models import (
    BackfillResult,
    ErrorResponse,
    Job,
    JobPage,
    Run,
    RunPage,
    SchedulePreview,
)
from scheduler_cli.exit_codes import CliError, ExitCode

M = TypeVar("M", bound=BaseModel)

RETRIES = 2  # more tries of a call that is safe to repeat, after a 503 or no connection
RETRY_PAUSE = 0.5
JOB_ID_LENGTH = 32
AUTHENTICATE = "www-authenticate"


def exit_code_for(status: int) -> ExitCode:
    if status in (401, 403):
        return ExitCode.AUTH
    if status == 404:
        return ExitCode.NOT_FOUND
    if status in (409, 422):
        return ExitCode.CONFLICT
    if status == 429 or status >= 500:
        return ExitCode.UNAVAILABLE
    return ExitCode.USAGE


@dataclass(frozen=True)
class Answer(Generic[M]):
    """An answer of the API: checked against its model, and as sent (for --json)."""

    model: M
    data: Any


def api_error(response: httpx.Response) -> CliError:
    """The API's error (its one shape, or API Gateway's `{"message"}`) as a CliError."""
    status = response.status_code
    payload: dict[str, Any] = {"status": status}
    try:
        body = response.json()
    except ValueError:
        body = None
    try:
        error = ErrorResponse.model_validate(body).error
    except ValidationError:
        gateway = body.get("message") if isinstance(body, dict) else None
        text = str(gateway or response.text.strip()[:200] or response.reason_phrase)
        if status == 401:
            # API Gateway's JWT authorizer names the problem in this header alone
            found = re.search(
                r'error_description="([^"]*)"', response.headers.get(AUTHENTICATE, "")
            )
            text += f": {found.group(1) if found else 'the token was refused'}"
        payload["error"] = {"code": f"http_{status}", "message": text, "details": []}
        return CliError(f"{status}: {text}", exit_code_for(status), payload)
    payload["error"] = error.model_dump(mode="json")
    message = f"{error.code}: {error.message}"
    for detail in error.details or []:
        line = f"{detail.get('field')}: {detail.get('problem')}"
        if detail.get("field") and detail.get("problem") and line not in error.message:
            message += f"\n  {line}"
    return CliError(message, exit_code_for(status), payload)


class Client:
    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": f"scheduler-cli/{__version__}",
            },
            timeout=timeout,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    # -- plumbing ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        repeatable: bool = False,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        """One call; a repeatable one is tried again after a 503 or a failed connection."""
        tries = 1 + (RETRIES if repeatable else 0)
        content = None if body is None else json.dumps(body).encode()
        sent = dict(headers or {})
        if content is not None:
            sent["Content-Type"] = "application/json"
        query = {key: value for key, value in (params or {}).items() if value is not None}
        for attempt in range(1, tries + 1):
            try:
                response = self._http.request(
                    method, path, params=query, content=content, headers=sent
                )
            except httpx.TimeoutException:
                if attempt < tries:
                    time.sleep(RETRY_PAUSE * attempt)
                    continue
                raise CliError(
                    f"the API at {self.url} did not answer {method} {path} in time",
                    ExitCode.UNAVAILABLE,
                ) from None
            except httpx.TransportError as exc:
                if attempt < tries:
                    time.sleep(RETRY_PAUSE * attempt)
                    continue
                raise CliError(
                    f"cannot reach the API at {self.url}: {exc}", ExitCode.UNAVAILABLE
                ) from None
            if response.status_code == 503 and attempt < tries:
                time.sleep(RETRY_PAUSE * attempt)
                continue
            if response.status_code not in ok:
                raise api_error(response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _answer(self, response: httpx.Response, model: type[M]) -> Answer[M]:
        try:
            data = response.json()
            return Answer(model.model_validate(data), data)
        except (ValueError, ValidationError) as exc:
            request = response.request
            raise CliError(
                f"the API's answer to {request.method} {request.url.path} does not match its "
                f"OpenAPI models ({model.__name__}); is this CLI older than the API? {exc}",
                ExitCode.UNAVAILABLE,
            ) from None

    def _call(self, model: type[M], method: str, path: str, **kwargs: Any) -> Answer[M]:
        return self._answer(self.request(method, path, **kwargs), model)

    # -- jobs -------------------------------------------------------------------------------

    def create_job(self, body: dict[str, Any], idempotency_key: str | None) -> Answer[Job]:
        # With an Idempotency-Key a repeated create returns the first job: safe to retry.
        key = idempotency_key or f"cli-{uuid.uuid4().hex}"
        return self._call(
            Job,
            "POST",
            "/jobs",
            body=body,
            headers={"Idempotency-Key": key},
            repeatable=True,
            ok=(201,),
        )

    def list_jobs(self, **filters: Any) -> Answer[JobPage]:
        return self._call(JobPage, "GET", "/jobs", params=filters, repeatable=True)

    def all_jobs(self, **filters: Any) -> Iterator[Answer[JobPage]]:
        """Every page, following next_token."""
        while True:
            page = self.list_jobs(**filters)
            yield page
            if not page.model.next_token:
                return
            filters["next_token"] = page.model.next_token

    def get_job(self, job_id: str) -> Answer[Job]:
        return self._call(Job, "GET", f"/jobs/{quote(job_id, safe='')}", repeatable=True)

    def find_job(self, reference: str) -> Answer[Job]:
        """A job by its id, or by its name (names are unique per owner)."""
        if len(reference) == JOB_ID_LENGTH and all(c in "0123456789abcdef" for c in reference):
            return self.get_job(reference)
        for page in self.all_jobs(name=reference, limit=100):
            for job, data in zip(page.model.items, page.data["items"], strict=True):
                if job.name == reference:
                    return Answer(job, data)
        raise CliError(f"you have no job named or numbered {reference!r}", ExitCode.NOT_FOUND)

    def update_job(self, job_id: str, body: dict[str, Any]) -> Answer[Job]:
        return self._call(Job, "PATCH", f"/jobs/{job_id}", body=body)

    def pause_job(self, job_id: str) -> Answer[Job]:
        return self._call(Job, "POST", f"/jobs/{job_id}/pause", repeatable=True)

    def resume_job(self, job_id: str) -> Answer[Job]:
        return self._call(Job, "POST", f"/jobs/{job_id}/resume", repeatable=True)

    def delete_job(self, job_id: str) -> None:
        self.request("DELETE", f"/jobs/{job_id}", ok=(204,))

    def preview_job(self, job_id: str, count: int, after: str | None) -> Answer[SchedulePreview]:
        params = {"count": count, "after": after}
        return self._call(
            SchedulePreview, "GET", f"/jobs/{job_id}/preview", params=params, repeatable=True
        )

    def preview_schedule(self, body: dict[str, Any]) -> Answer[SchedulePreview]:
        return self._call(SchedulePreview, "POST", "/schedules/preview", body=body, repeatable=True)

    # -- runs -------------------------------------------------------------------------------

    def list_runs(self, job_id: str, **params: Any) -> Answer[RunPage]:
        return self._call(RunPage, "GET", f"/jobs/{job_id}/runs", params=params, repeatable=True)

    def all_runs(self, job_id: str, **params: Any) -> Iterator[Answer[RunPage]]:
        while True:
            page = self.list_runs(job_id, **params)
            yield page
            if not page.model.next_token:
                return
            params["next_token"] = page.model.next_token

    def get_run(self, job_id: str, key: str) -> Answer[Run]:
        return self._call(Run, "GET", f"/jobs/{job_id}/runs/{quote(key, safe='')}", repeatable=True)

    def find_run(self, job_id: str, key: str) -> Answer[Run]:
        """A run by its key, or `latest`: the job's newest run."""
        if key != "latest":
            return self.get_run(job_id, key)
        page = self.list_runs(job_id, limit=1)
        if not page.model.items:
            raise CliError("the job has no run yet", ExitCode.NOT_FOUND)
        return Answer(page.model.items[0], page.data["items"][0])

    def run_output(self, job_id: str, key: str) -> str:
        """The run's full output: the text itself, or what the 307's link points to (fetched
        without the bearer token, which is for the API alone)."""
        response = self.request(
            "GET", f"/jobs/{job_id}/runs/{quote(key, safe='')}/output", ok=(200, 307)
        )
        if response.status_code == 200:
            return response.text
        location = response.headers.get("location", "")
        try:
            linked = httpx.get(location, timeout=self._http.timeout)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot fetch the output: {exc}", ExitCode.UNAVAILABLE) from None
        if linked.status_code != 200:
            raise CliError(
                f"the output link answered {linked.status_code}", exit_code_for(linked.status_code)
            )
        return linked.content.decode("utf-8", errors="replace")

    def cancel_run(self, job_id: str, key: str, reason: str | None) -> Answer[Run]:
        body = {} if reason is None else {"reason": reason}
        return self._call(
            Run, "POST", f"/jobs/{job_id}/runs/{quote(key, safe='')}/cancel", body=body
        )

    def run_now(self, job_id: str, body: dict[str, Any]) -> Answer[Run]:
        return self._call(Run, "POST", f"/jobs/{job_id}/run", body=body or None, ok=(202,))

    def backfill(self, job_id: str, body: dict[str, Any]) -> Answer[BackfillResult]:
        return self._call(BackfillResult, "POST", f"/jobs/{job_id}/backfill", body=body)
