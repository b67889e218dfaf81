"""The soak's workload, driven over the API as users would drive it: owners with every-minute,
every-5-minute and hourly jobs (in zones with daylight saving), jobs that fail, time out or fail
once; run-now bursts; and, every minute, jobs updated, paused, resumed, created and deleted.

Every change is made between seconds 12 and 48 of a minute (no schedule here fires elsewhere
than at second 0), and the ledger keeps when each job's schedule applied, so that the checker can
tell which occurrences were due without asking the scheduler. Calls are retried while the stack
is down or answers 5xx / 409 job_busy, as a careful client would."""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

from devstack import auth

ZONES = (
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Asia/Kathmandu",
    "Asia/Kolkata",
)
DST_ZONES = (
    "Europe/Paris",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Santiago",
)
YEARLY = "0 0 1 1 *"
SETUP_THREADS = 8
LISTING_THREADS = 4  # the drain and the checker list the jobs' runs this many at a time
# What each kind of script does; the checker expects the matching final status.
SCRIPTS = {
    "ok": "import json, os\nprint(json.dumps({'run': os.environ['RUN_KEY'], "
    "'attempt': os.environ['ATTEMPT']}))\n",
    "flaky": "import os, sys\nprint('attempt', os.environ['ATTEMPT'])\n"
    "sys.exit(1 if os.environ['ATTEMPT'] == '1' else 0)\n",
    "fail": "import sys\nprint('failing on purpose')\nsys.exit(3)\n",
    "timeout": "import time\ntime.sleep(30)\n",
}


@dataclass
class Segment:
    """A schedule that applied from `start` (exclusive) to `end` (inclusive; None: still)."""

    schedule: str
    timezone: str
    start: float
    end: float | None = None


@dataclass
class JobRecord:
    job_id: str
    user: str
    behaviour: str
    segments: list[Segment]
    # Occurrences in these (from, to] ranges may or may not have run (a change was under way).
    grey: list[tuple[float, float]] = field(default_factory=list)
    deleted_at: float | None = None
    snapshot: list[dict[str, Any]] | None = None  # its runs just before it was deleted
    paused: bool = False


@dataclass
class ManualRun:
    job_id: str
    user: str
    reason: str
    requested_at: float
    key: str | None = None  # None: every try failed (no run expected)
    failed_tries: int = 0


class Api:
    """The API with one token per owner, retrying what a careful client retries."""

    def __init__(self, url: str, tokens: dict[str, str], give_up_s: float = 180) -> None:
        self.url = url
        self.tokens = tokens
        self.give_up_s = give_up_s
        self._local = threading.local()  # a session per thread: the setup creates in parallel
        self.errors = 0

    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def call(
        self, method: str, path: str, user: str, *, retry: bool = True, **kwargs: Any
    ) -> requests.Response | None:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} | kwargs.pop("headers", {})
        deadline = time.time() + self.give_up_s
        pause = 0.5
        while True:
            try:
                response = self.session.request(
                    method, self.url + path, headers=headers, timeout=30, **kwargs
                )
                busy = response.status_code == 409 and "job_busy" in response.text
                if response.status_code < 500 and response.status_code != 429 and not busy:
                    return response
            except requests.RequestException:
                response = None
            self.errors += 1
            if not retry or time.time() > deadline:
                return response
            time.sleep(pause)
            pause = min(pause * 2, 5)

    def runs(self, job_id: str, user: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token = None
        while True:
            params: dict[str, Any] = {"limit": 100} | ({"next_token": token} if token else {})
            response = self.call("GET", f"/jobs/{job_id}/runs", user, params=params)
            if response is None or response.status_code != 200:
                raise RuntimeError(f"listing the runs of {job_id}: {response and response.text}")
            page = response.json()
            found += page["items"]
            token = page.get("next_token")
            if not token:
                return found

    def runs_of(
        self, jobs: list[JobRecord], until: float | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Each job's runs (job id -> runs), LISTING_THREADS jobs at a time; once `until` has
        passed, the jobs not listed yet are left out."""

        def listed(job: JobRecord) -> tuple[str, list[dict[str, Any]] | None]:
            if until is not None and time.time() >= until:
                return job.job_id, None
            return job.job_id, self.runs(job.job_id, job.user)

        with ThreadPoolExecutor(LISTING_THREADS) as pool:
            return {job_id: runs for job_id, runs in pool.map(listed, jobs) if runs is not None}


@dataclass
class Workload:
    api: Api
    rng: random.Random
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    manual: list[ManualRun] = field(default_factory=list)
    operations: list[dict[str, Any]] = field(default_factory=list)
    _churn: set[str] = field(default_factory=set)  # the jobs created during the soak
    # Each job's runs as the drain last listed them (the checker reuses them).
    last_listed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def for_stack(cls, url: str, api_port: int, state_dir: Any, owners: int, seed: int) -> Workload:
        keys = auth.KeyPair.load_or_create(state_dir)
        issuer = auth.issuer_for(api_port)
        tokens = {f"owner{i:02d}": keys.mint(f"owner{i:02d}", issuer=issuer) for i in range(owners)}
        return cls(Api(url, tokens), random.Random(f"{seed}:workload"))

    @property
    def owners(self) -> list[str]:
        return sorted(self.api.tokens)

    def create(
        self,
        user: str,
        schedule: str,
        timezone: str,
        behaviour: str,
        start_at: float | None = None,
    ) -> JobRecord | None:
        body: dict[str, Any] = {
            "name": f"soak-{uuid.uuid4().hex[:12]}",
            "schedule": schedule,
            "timezone": timezone,
            "script": SCRIPTS[behaviour],
            "timeout_seconds": 5 if behaviour == "timeout" else 20,
            "max_attempts": {"fail": 2, "timeout": 1}.get(behaviour, 3),
        }
        if start_at is not None:
            body["start_at"] = datetime.fromtimestamp(start_at, UTC).isoformat()
        started = time.time()
        response = self.api.call(
            "POST", "/jobs", user, json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
        )
        if response is None or response.status_code != 201:
            self.operations.append({"at": started, "op": "create", "failed": True})
            return None
        job = response.json()
        begins = started if start_at is None else max(started, start_at)
        record = JobRecord(job["job_id"], user, behaviour, [Segment(schedule, timezone, begins)])
        record.grey.append((started, time.time()))
        self.jobs[record.job_id] = record
        self.operations.append({"at": started, "op": "create", "job_id": record.job_id})
        return record

    def setup(self, per_owner: dict[str, int], start_at: float) -> None:
        """The owners' jobs, none running before `start_at`: their first runs are then taken
        by the watcher's ticks, packed by owner, instead of one task per job created. Created
        SETUP_THREADS at a time (as many teams would), kept in the order they were drawn."""
        specs: list[tuple[str, str, str, str, float | None]] = []
        for user in self.owners:
            for _ in range(per_owner["minute"]):
                specs.append((user, "* * * * *", self.rng.choice(ZONES), "ok", start_at))
            for _ in range(per_owner["five"]):
                specs.append((user, "*/5 * * * *", self.rng.choice(ZONES), "ok", start_at))
            for _ in range(per_owner["hourly"]):
                minute = self.rng.randrange(60)
                zone = self.rng.choice(DST_ZONES)
                specs.append((user, f"{minute} * * * *", zone, "ok", start_at))
            specs.append((user, "*/2 * * * *", "UTC", "flaky", start_at))
            specs.append((user, "*/5 * * * *", "Europe/Paris", "fail", start_at))
            specs.append((user, "*/5 * * * *", "America/New_York", "timeout", start_at))
            for _ in range(per_owner["burst"]):
                specs.append((user, YEARLY, "UTC", "ok", None))
        with ThreadPoolExecutor(SETUP_THREADS) as pool:
            created = list(pool.map(lambda spec: self.create(*spec), specs))
        drawn = {record.job_id: record for record in created if record is not None}
        self.jobs = drawn | {k: v for k, v in self.jobs.items() if k not in drawn}

    # -- changes during the soak -----------------------------------------------------------

    def _active(self, behaviour: str = "ok") -> list[JobRecord]:
        return [
            j
            for j in self.jobs.values()
            if j.deleted_at is None
            and not j.paused
            and j.behaviour == behaviour
            and j.segments[-1].schedule != YEARLY
        ]

    def update(self, job: JobRecord) -> None:
        schedule = "*/2 * * * *" if job.segments[-1].schedule == "* * * * *" else "* * * * *"
        started = time.time()
        response = self.api.call(
            "PATCH", f"/jobs/{job.job_id}", job.user, json={"schedule": schedule}
        )
        ended = time.time()
        if response is None or response.status_code != 200:
            # Whether it applied is unknown: from now on either schedule may have run.
            job.grey.append((started, 1e12))
            self.operations.append({"at": started, "op": "update", "failed": True})
            return
        self._switch(job, Segment(schedule, job.segments[-1].timezone, ended), started)
        self.operations.append({"at": started, "op": "update", "job_id": job.job_id})

    def _switch(self, job: JobRecord, segment: Segment | None, started: float) -> None:
        """The current segment ends at `started`; the runs it had already taken (up to the
        look-ahead, ~90 s, and a retry or two) may still run: grey."""
        job.segments[-1].end = started
        job.grey.append((started, started + 240))
        if segment is not None:
            job.segments.append(segment)

    def pause(self, job: JobRecord) -> None:
        started = time.time()
        response = self.api.call("POST", f"/jobs/{job.job_id}/pause", job.user)
        if response is None or response.status_code not in (200, 409):
            job.grey.append((started, 1e12))
            self.operations.append({"at": started, "op": "pause", "failed": True})
            return
        job.paused = True
        self._switch(job, None, started)
        self.operations.append({"at": started, "op": "pause", "job_id": job.job_id})

    def resume(self, job: JobRecord) -> None:
        started = time.time()
        response = self.api.call("POST", f"/jobs/{job.job_id}/resume", job.user)
        ended = time.time()
        if response is None or response.status_code != 200:
            job.grey.append((started, 1e12))
            self.operations.append({"at": started, "op": "resume", "failed": True})
            return
        job.paused = False
        last = job.segments[-1]
        job.segments.append(Segment(last.schedule, last.timezone, ended))
        job.grey.append((started, ended))
        self.operations.append({"at": started, "op": "resume", "job_id": job.job_id})

    def delete(self, job: JobRecord) -> None:
        job.snapshot = self.api.runs(job.job_id, job.user)
        started = time.time()
        response = self.api.call("DELETE", f"/jobs/{job.job_id}", job.user)
        if response is None or response.status_code not in (204, 404):
            job.snapshot = None
            self.operations.append({"at": started, "op": "delete", "failed": True})
            return
        job.deleted_at = started
        if not job.paused:
            self._switch(job, None, started)
        self.operations.append({"at": started, "op": "delete", "job_id": job.job_id})

    def run_now_burst(self, size: int) -> None:
        user = self.rng.choice(self.owners)
        targets = [
            j for j in self.jobs.values() if j.user == user and j.segments[0].schedule == YEARLY
        ]
        for _ in range(size):
            job = self.rng.choice(targets)
            manual = ManualRun(job.job_id, user, f"soak-{uuid.uuid4().hex}", time.time())
            self.manual.append(manual)
            while True:  # retried by hand: a retry after an error answer may make a second run
                response = self.api.call(
                    "POST",
                    f"/jobs/{job.job_id}/run",
                    user,
                    retry=False,
                    json={"reason": manual.reason},
                )
                if response is not None and response.status_code == 202:
                    manual.key = response.json()["key"]
                    break
                manual.failed_tries += 1
                if manual.failed_tries > 20:
                    break
                time.sleep(1)
        self.operations.append({"at": time.time(), "op": "run_now_burst", "runs": size})

    def churn(self, minute: int) -> None:
        """One minute's changes, made inside seconds 12-48 of it."""
        rng = self.rng
        for job in rng.sample(self._active(), 2):
            self.update(job)
        paused = [j for j in self.jobs.values() if j.paused and j.deleted_at is None]
        if paused and minute % 3 == 0:
            self.resume(rng.choice(paused))
        self.pause(rng.choice(self._active()))
        churned = [
            j
            for j in self.jobs.values()
            if j.behaviour == "ok"
            and j.deleted_at is None
            and j.segments[0].start < time.time() - 240
            and j.job_id in self._churn
        ]
        if churned:
            self.delete(rng.choice(churned))
        new = self.create(rng.choice(self.owners), "* * * * *", rng.choice(ZONES), "ok")
        if new is not None:
            self._churn.add(new.job_id)
