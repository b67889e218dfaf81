"""The names of the scheduler's own CloudWatch metrics: namespace `Scheduler`, one dimension
`service` = `scheduler` (the template's POWERTOOLS_METRICS_NAMESPACE and
POWERTOOLS_SERVICE_NAME). The dashboard and the alarms in template.yaml name exactly these, and
tests/unit/test_dashboard.py checks that the dashboard names nothing else. No metric has a
per-job or per-owner dimension: their count would be the bill. What AWS already measures (API
Gateway, Lambda, SQS, DynamoDB) is read from AWS's own namespaces, never re-emitted.

Who emits what (unit in brackets):

Run outcomes (scheduler/runs/run_outcomes.py), wherever an attempt ends: run_reports (the
runner's finished report), task_events (a task stopped) and the watcher's deadline sweep:
  RunsSucceeded [Count]     a run ended SUCCEEDED
  RunsFailed [Count]        a run ended FAILED, its attempts used up
  RunsTimedOut [Count]      a run ended TIMED_OUT, its attempts used up
  RunsRetried [Count]       a failed or timed-out attempt was followed by a retry
  UnreportedRuns [Count]    an attempt ended with no finished report from its runner (task
                            stopped early, or deadline passed): task_events, watcher; 0 for a
                            run whose task stopped after it had reported
  StartLag [Milliseconds]   script start minus its scheduled second, once per attempt
  LateRuns [Count]          1 for an attempt with StartLag > 2000 ms, else 0 (Sum = late runs)

Cancels (scheduler/runs/run_cancels.py): cancel_run (the owner), run_reports (a REPLACE job's
new run waiting for the lock):
  RunsCancelled [Count]     an unfinished run was ended CANCELLED

The watcher (functions/watcher, scheduler/pipeline/watcher.py and due_runs.py; due_runs also
runs in create_job, update_job and resume_job for an occurrence due before the next tick):
  RunsSkipped [Count]       a run recorded SKIPPED: its catch-up policy passes over a missed
                            occurrence, or the job was paused or deleted before the run
                            started (also from the executor; and from run outcomes for a run
                            its runner skipped by the job's overlap policy)
  QueueLead [Seconds]       scheduled second minus the time the run was sent to the queue
  TickDuration [Milliseconds]  one tick, from start to cursor moved
  TickItems [Count]         schedule items the tick took (successors included)
  RunsQueued [Count]        runs the tick sent to the dispatch queue
  LostRunsConcluded [Count] in-flight runs past their deadline that the sweep concluded

The executor (functions/executor, scheduler/pipeline/executor.py):
  DispatchLead [Seconds]    scheduled second minus the time of the RunTask call (per run)
  TasksStarted [Count]      runner tasks started (one per dispatch message)
  DispatchFailures [Count]  dispatches that started no task, throttles included (SQS redelivers)
  RunTaskThrottles [Count]  of those, RunTask still throttled after botocore's retries
"""

from __future__ import annotations

from typing import Final

# -- run outcomes: run_reports, task_events, watcher sweep
RUNS_SUCCEEDED: Final = "RunsSucceeded"
RUNS_FAILED: Final = "RunsFailed"
RUNS_TIMED_OUT: Final = "RunsTimedOut"
RUNS_RETRIED: Final = "RunsRetried"
UNREPORTED_RUNS: Final = "UnreportedRuns"
START_LAG: Final = "StartLag"
LATE_RUNS: Final = "LateRuns"
RUNS_CANCELLED: Final = "RunsCancelled"

# -- watcher (and the API functions that take an occurrence early)
RUNS_SKIPPED: Final = "RunsSkipped"
RUNS_DEFERRED: Final = "RunsDeferred"  # a scheduled run moved past a full runs_per_minute quota
QUEUE_LEAD: Final = "QueueLead"
TICK_DURATION: Final = "TickDuration"
TICK_ITEMS: Final = "TickItems"
RUNS_QUEUED: Final = "RunsQueued"
LOST_RUNS_CONCLUDED: Final = "LostRunsConcluded"

# -- executor
DISPATCH_LEAD: Final = "DispatchLead"
TASKS_STARTED: Final = "TasksStarted"
DISPATCH_FAILURES: Final = "DispatchFailures"
RUN_TASK_THROTTLES: Final = "RunTaskThrottles"
RUNS_WAITING_FOR_PLACE: Final = "RunsWaitingForPlace"  # deferred: concurrent_runs was full

ALL: Final[frozenset[str]] = frozenset(
    {
        RUNS_SUCCEEDED,
        RUNS_FAILED,
        RUNS_TIMED_OUT,
        RUNS_RETRIED,
        UNREPORTED_RUNS,
        START_LAG,
        LATE_RUNS,
        RUNS_CANCELLED,
        RUNS_SKIPPED,
        RUNS_DEFERRED,
        QUEUE_LEAD,
        TICK_DURATION,
        TICK_ITEMS,
        RUNS_QUEUED,
        LOST_RUNS_CONCLUDED,
        DISPATCH_LEAD,
        TASKS_STARTED,
        DISPATCH_FAILURES,
        RUN_TASK_THROTTLES,
        RUNS_WAITING_FOR_PLACE,
    }
)
