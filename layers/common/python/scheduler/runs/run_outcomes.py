"""How an attempt ends, from whichever signal arrives first: the runner's reports (S3 objects
under reports/, through their notifications: one run's, or a batch of finished reports of the
runs of one pack claim), the ECS task-stopped event (the safety net for a
task that died before reporting), or the watcher's deadline sweep. Success is final; a failure
is retried with exponential backoff while attempts last."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger

from scheduler import keys, metrics
from scheduler import metric_names as names
from scheduler.jobs.ports import JobHealth
from scheduler.quotas.quota_models import Places
from scheduler.runs.ports import RunNotifier, RunObjects, RunStore
from scheduler.runs.run_cancels import RunCancels
from scheduler.runs.run_log import run_changed
from scheduler.runs.run_models import (
    AttemptRecord,
    ConcurrencyPolicy,
    Run,
    RunEvent,
    RunNotification,
    RunReport,
    RunStatus,
)
from scheduler.schedule.schedule_item import ScheduleItem
from scheduler.times import Clock, epoch

logger = Logger(child=True)


# The promise: a script starts within 2 s of its scheduled second.
LATE_AFTER_MS = 2000
# What an attempt can end as that is tried again (a cancel or a skip is final).
RETRIED = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT})
# Statuses of a run that no runner may have claimed yet (see conclude_unreported).
_BEFORE_A_RUNNER = frozenset({RunStatus.QUEUED, RunStatus.DISPATCHING, RunStatus.DISPATCHED})
# The runner's exit status when it delivered every run's report (or left a run to the task
# that holds its claim, or to the cancel that stopped it): runner/jobrunner/config.py EXIT_OK.
RUNNER_REPORTED_ALL = 0
# Attempts of one run whose script never started (its task stopped first), not counted against
# max_attempts; past them, the run fails.
MAX_UNSTARTED_ATTEMPTS = 3
_FINAL_METRIC = {
    RunStatus.SUCCEEDED: names.RUNS_SUCCEEDED,
    RunStatus.FAILED: names.RUNS_FAILED,
    RunStatus.TIMED_OUT: names.RUNS_TIMED_OUT,
    RunStatus.SKIPPED: names.RUNS_SKIPPED,
    RunStatus.CANCELLED: names.RUNS_CANCELLED,
}


def retry_delay(attempt: int, base_seconds: int, cap_seconds: int = 3600) -> int:
    """Seconds to wait after failed attempt number `attempt` (1-based): base, 2*base, 4*base..."""
    return int(min(cap_seconds, base_seconds * 2 ** max(0, attempt - 1)))


class RunOutcomes:
    def __init__(
        self,
        runs: RunStore,
        objects: RunObjects,
        *,
        retry_base_seconds: int,
        running_grace_seconds: int,
        clock: Clock,
        notifier: RunNotifier | None = None,
        jobs: JobHealth | None = None,
        cancels: RunCancels | None = None,
        places: Places | None = None,
    ) -> None:
        self._places = places
        self._cancels = cancels
        self._notifier = notifier
        self._jobs = jobs
        self._runs = runs
        self._objects = objects
        self._retry_base = retry_base_seconds
        self._grace = running_grace_seconds
        self._clock = clock

    # -- runner reports ------------------------------------------------------------------------

    def on_s3_notification(self, body: str) -> None:
        """One SQS message from the bucket's notification: zero or more ObjectCreated records
        (S3's first message is an s3:TestEvent, which carries none)."""
        notification = json.loads(body)
        for record in notification.get("Records", []):
            self.on_report(unquote_plus(record["s3"]["object"]["key"]))

    def on_report(self, key: str) -> None:
        batch = keys.parse_batch_report_key(key)
        if batch is not None:
            self._on_batch(key, *batch)
            return
        parsed = keys.parse_report_key(key)
        if parsed is None:
            logger.warning("ignoring an object that is not a run report", key=key)
            return
        job_id, run_key, attempt, kind = parsed
        run = self._runs.get_stored(job_id, run_key)
        report = self._objects.report(key)
        if run is None or report is None or run.attempt != attempt:
            return  # an old attempt, or a report we cannot trust: nothing to do
        self._apply(run, report, kind)

    def _on_batch(self, key: str, pack_id: str, second: int, _index: int) -> None:
        """The finished reports of several runs of one pack claim: each is applied only to a
        run whose current attempt that claim holds (a batch speaks for its claim's runs only)."""
        for report in self._objects.batch_reports(key):
            run = self._runs.get_stored(report.job_id, report.run_key)
            if run is None or run.attempt != report.attempt:
                continue  # an old attempt: nothing to do
            if (run.claim_pack, run.claim_second) != (pack_id, second):
                logger.warning(
                    "ignoring a batched report of a run its pack claim does not hold",
                    key=key,
                    job_id=run.job_id,
                    run_key=run.key,
                )
                continue
            self._apply(run, report, "finished")

    def _apply(self, run: Run, report: RunReport, kind: str) -> None:
        if run.status.terminal:
            if run.status is RunStatus.CANCELLED and kind == "finished":
                # What the cancelled script did before it stopped: kept, the status stays.
                self._runs.record_cancelled(run, report, _output_key(run, report), self._clock())
            return
        if kind == "started":
            deadline = epoch(report.started_at or self._clock()) + run.timeout_seconds + self._grace
            if self._runs.mark_running(run, report, self._clock(), deadline):
                self._record_start(run, report)
        elif kind == "waiting":
            self._on_waiting(run, report)
        else:
            self.conclude(run, report)

    def _on_waiting(self, run: Run, report: RunReport) -> None:
        """The run's task waits for the job's previous run (BUFFER_ONE, REPLACE): its deadline
        moves past that wait; a REPLACE run has the runs it replaces cancelled."""
        until = report.wait_until or epoch(self._clock())
        deadline = until + run.timeout_seconds + self._grace
        if self._runs.mark_waiting(run, self._clock(), deadline):
            run_changed("run waiting", run, waiting_for=report.waiting_for)
        if self._cancels is None:
            return
        for key in report.replaces or []:
            reason = f"cancelled: replaced by run {run.key} (REPLACE)"
            self._cancels.cancel_by_key(run.job_id, key, reason)

    # -- ECS task state changes ----------------------------------------------------------------

    def on_task_stopped(self, detail: dict[str, Any]) -> None:
        """A task stopped: each of its runs that did not report its end has failed (or, if its
        report landed in the meantime, is concluded from that report), and its pack's
        concurrent_runs places are given back (once: a repeated event finds the item gone).
        A runner that exited 0 reported every run: their reports' notifications end them (the
        sweep, from the reports, if a notification is lost), so none is read here."""
        if detail.get("lastStatus") != "STOPPED":
            return
        exit_code = next(
            (c.get("exitCode") for c in detail.get("containers", []) if "exitCode" in c), None
        )
        reason = str(detail.get("stoppedReason", "task stopped"))
        refs = _run_refs(detail)
        if exit_code == RUNNER_REPORTED_ALL:
            metrics.count(names.UNREPORTED_RUNS, 0)
            refs = []
        for job_id, run_key, attempt in refs:
            run = self._runs.get_stored(job_id, run_key)
            if run is None or run.attempt != attempt:
                continue
            self.conclude_unreported(
                run, f"task stopped before the run reported its end: {reason}", exit_code
            )
        place = _place(detail)
        if place is not None and self._places is not None:
            self._places.give_back(place)

    # -- the end of an attempt -----------------------------------------------------------------

    def conclude_unreported(self, run: Run, error: str, exit_code: int | None = None) -> bool:
        """End the current attempt of a run whose runner went silent (its task stopped, or its
        deadline passed): from its finished report if that landed after all (its notification
        may still be on its way), else as FAILED. False if there was nothing to conclude."""
        if run.status.terminal or run.status is RunStatus.PENDING:
            metrics.count(names.UNREPORTED_RUNS, 0)  # its runner had reported: "none" counts
            return False  # finished, or already being retried
        finished = self._objects.finished_report(run)
        metrics.count(names.UNREPORTED_RUNS, int(finished is None))
        if run.overlap is not ConcurrencyPolicy.ALLOW:
            # A task that died holding the job's lock would block the next runs until it
            # went stale.
            self._objects.release_lock(run.job_id, run.key, run.attempt)
        if finished is None and self._objects.cancel_requested(run.job_id, run.key, run.attempt):
            # Cancelled before it started (its claim taken), by a cancel that did not get to
            # record it: it stays cancelled.
            finished = RunReport(
                job_id=run.job_id,
                run_key=run.key,
                attempt=run.attempt,
                status=RunStatus.CANCELLED,
                error="cancelled before the script started",
                output_uploaded=False,
            )
        started = True
        if finished is None:
            # A runner claims each run just before its script starts: if none did, the task
            # stopped (or went silent) before the script ever ran, which is no attempt of the
            # script: it is retried at once, not counted against max_attempts.
            if run.status in _BEFORE_A_RUNNER:
                started = self._objects.attempt_claimed(run)
            run_changed("run unreported", run, error=error, exit_code=exit_code, started=started)
            finished = RunReport(
                job_id=run.job_id,
                run_key=run.key,
                attempt=run.attempt,
                status=RunStatus.FAILED,
                exit_code=exit_code,
                error=error if started else f"the script never started: {error}",
                output_uploaded=False,
            )
        self.conclude(run, finished, script_started=started)
        return True

    def conclude_if_reported(self, run: Run) -> bool:
        """End the current attempt from its finished report, if one landed (its notification
        lost or still on its way); False if there is none."""
        finished = self._objects.finished_report(run)
        if finished is None:
            return False
        self.conclude(run, finished)
        return True

    def conclude(self, run: Run, report: RunReport, *, script_started: bool = True) -> RunStatus:
        """Record the end of the run's current attempt; returns the run's new status. An
        attempt whose script never started is not counted against max_attempts (up to
        MAX_UNSTARTED_ATTEMPTS of them: a task that can never start must end somewhere)."""
        now = self._clock()
        status = report.status or RunStatus.FAILED
        unstarted = run.unstarted_attempts + (0 if script_started else 1)
        counted = run.attempt - unstarted
        if status in RETRIED and counted < run.max_attempts and unstarted <= MAX_UNSTARTED_ATTEMPTS:
            delay = retry_delay(counted, self._retry_base) if script_started else 0
            not_before = epoch(now) + delay
            failed = AttemptRecord(
                attempt=run.attempt,
                status=status,
                exit_code=report.exit_code,
                finished_at=report.finished_at or now,
                error=report.error,
                script_started=script_started,
            )
            if self._runs.retry(run, failed, not_before, now):
                if run.status is not RunStatus.RUNNING:  # its started report was not applied
                    self._record_start(run, report)
                metrics.count(names.RUNS_RETRIED)
                run_changed("run retried", run, status=status.value, not_before=not_before)
                return RunStatus.PENDING
            return run.status
        final = report.model_copy(update={"status": status})
        if not self._runs.finish(run, final, _output_key(run, report), now):
            return status
        if run.status is not RunStatus.RUNNING:  # its started report was not applied
            self._record_start(run, report)
        if status in _FINAL_METRIC:
            metrics.count(_FINAL_METRIC[status])
        run_changed("run finished", run, status=status.value, exit_code=report.exit_code)
        wanted = run.notifications is not None and run.notifications.on_failure
        if wanted and status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
            self._notify(RunEvent.RUN_FAILED, run, final)
        self._track_failures(run, final, now)
        return status

    def _track_failures(self, run: Run, final: RunReport, now: datetime) -> None:
        """A job that pauses after N runs in a row failed: count this end, pause at N."""
        limit = run.pause_after_failures
        if limit is None or self._jobs is None:
            return
        if final.status is RunStatus.SUCCEEDED:
            self._jobs.reset_failures(run.job_id)
            return
        if final.status not in (RunStatus.FAILED, RunStatus.TIMED_OUT):
            return
        count = self._jobs.count_failure(run.job_id)
        if count is None or count < limit:
            return
        reason = f"paused after {count} runs in a row failed or timed out (the last: {run.key})"
        if self._jobs.pause_for_failures(run.job_id, reason, now):
            run_changed("job paused", run, reason=reason)
            if run.notifications is not None and run.notifications.on_failure:
                self._notify(RunEvent.JOB_PAUSED, run, final.model_copy(update={"error": reason}))

    def check_succeeded(self, run: Run) -> bool:
        """The dead man's switch of a scheduled run, at its grace period's end: tell the owner
        if it has not succeeded (failed, still under way, or never started). False if told."""
        if run.status in (RunStatus.SUCCEEDED, RunStatus.SKIPPED):
            return True
        report = RunReport(
            job_id=run.job_id, run_key=run.key, attempt=run.attempt, status=run.status
        )
        self._notify(RunEvent.RUN_MISSED, run, report.model_copy(update={"error": run.error}))
        return False

    def _record_start(self, run: Run, report: RunReport) -> None:
        """A script started: its lateness, once per attempt (told to the owner once per run,
        on its first attempt: a retry starts late by design)."""
        lag = report.start_lag_ms
        if lag is None:
            return
        metrics.milliseconds(names.START_LAG, lag)
        metrics.count(names.LATE_RUNS, int(lag > LATE_AFTER_MS))
        run_changed("run started", run, start_lag_ms=lag)
        threshold = run.notifications.late_after_seconds if run.notifications else None
        late = threshold is not None and run.attempt == 1 and lag > threshold * 1000
        # The start can be recorded twice at once (its started report, and its task's stop or
        # its finished report, handled concurrently): the owner is told once.
        if late and self._runs.note_once(run, RunEvent.RUN_LATE.value):
            self._notify(RunEvent.RUN_LATE, run, report.model_copy(update={"status": None}))

    def _notify(self, event: RunEvent, run: Run, report: RunReport) -> None:
        if self._notifier is None:
            return
        self._notifier.notify(
            RunNotification(
                event_type=event,
                user_id=run.user_id,
                job_id=run.job_id,
                run_key=run.key,
                attempt=run.attempt,
                scheduled_at=run.scheduled_at,
                status=report.status or RunStatus.RUNNING,
                exit_code=report.exit_code,
                start_lag_ms=report.start_lag_ms,
                output_tail=report.output_tail,
                error=report.error,
                link=f"/jobs/{run.job_id}/runs/{run.key}",
            )
        )
        run_changed("owner notified", run, event_type=event.value)


def _output_key(run: Run, report: RunReport) -> str | None:
    """Where the attempt's full output lives; None when output_tail already holds all of it."""
    if report.output_uploaded is False:
        return None
    return keys.output_key(run.job_id, run.key, run.attempt)


def _run_refs(detail: dict[str, Any]) -> list[keys.RunRef]:
    return [ref for text in _overrides(detail, "RUN_REFS") for ref in keys.parse_run_refs(text)]


def _place(detail: dict[str, Any]) -> ScheduleItem | None:
    """The task's pack place item (the executor's PLACE override), if it took one."""
    found = [ScheduleItem.from_place_ref(text) for text in _overrides(detail, "PLACE")]
    return next((place for place in found if place is not None), None)


def _overrides(detail: dict[str, Any], name: str) -> list[str]:
    """The values of the task's environment overrides named `name`."""
    return [
        str(variable.get("value", ""))
        for override in detail.get("overrides", {}).get("containerOverrides", [])
        for variable in override.get("environment", [])
        if variable.get("name") == name
    ]
