"""Every key format, in one place: DynamoDB partition and sort keys, S3 object keys, and the run
references a task carries. String order of every sort key is time order."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

EPOCH_DIGITS = 10  # zero-padded epoch seconds sort as strings until the year 2286

# -- DynamoDB -----------------------------------------------------------------------------------


def epoch_text(instant: datetime) -> str:
    return f"{int(instant.timestamp()):0{EPOCH_DIGITS}d}"


def shard_of(job_id: str, shards: int) -> int:
    """The schedule shard a job's items live in: stable, and even over random job ids."""
    return zlib.crc32(job_id.encode()) % shards


def hour_bucket(instant: datetime, shard: int) -> str:
    """Partition key of a schedule item: the dated UTC hour plus a shard, e.g. 2026-11-27T16#07."""
    return f"{instant.astimezone(UTC):%Y-%m-%dT%H}#{shard:02d}"


def schedule_slot(due: datetime, suffix: str) -> str:
    """Sort key of a schedule item: `<due second>#<job_id>` (retries and manual runs add
    `#<run_key>`, as they can share a second with the job's next occurrence)."""
    return f"{epoch_text(due)}#{suffix}"


def run_key(instant: datetime, job_id: str) -> str:
    """A run's key, as in the seed: `<execution_time>-<job_id>`."""
    return f"{epoch_text(instant)}-{job_id}"


def manual_run_key(instant: datetime, job_id: str, token: str) -> str:
    """A manual run's key: `<execution_time>-<job_id>-m<token>`. Any number of manual runs can
    share a second, and none takes the key of the scheduled occurrence of that second; it still
    sorts in time order, after that occurrence's key."""
    return f"{run_key(instant, job_id)}-m{token}"


def inflight_shard(job_id: str, shards: int) -> str:
    """Partition key of the runs table's in-flight index (the deadline sweep queries each)."""
    return f"{shard_of(job_id, shards):02d}"


def dispatch_record_id(claim_id: str) -> str:
    """The runs-table partition of one executor dispatch (a pack's task): never a job's id."""
    return f"dispatch#{claim_id}"


def job_pk(job_id: str) -> str:
    return f"JOB#{job_id}"


def name_pk(user_id: str, name: str) -> str:
    """The item that keeps a job name unique per owner."""
    return f"NAME#{user_id}#{name}"


# -- S3 -----------------------------------------------------------------------------------------

REPORT_PREFIX = "reports/"
REPORT_KINDS = ("started", "finished", "waiting")
# Finished reports of several runs of a pack at once (see batch_report_key).
BATCH_REPORT_PREFIX = f"{REPORT_PREFIX}packs/"


def script_key(sha256: str) -> str:
    """Scripts are content-addressed: the same source is one object."""
    return f"scripts/{sha256[:2]}/{sha256}.py"


def manifest_key(pack_id: str) -> str:
    return f"manifests/{pack_id}.json"


def report_key(job_id: str, run_key: str, attempt: int, kind: str) -> str:
    return f"{REPORT_PREFIX}{job_id}/{run_key}/{attempt}/{kind}.json"


def parse_report_key(key: str) -> tuple[str, str, int, str] | None:
    """(job_id, run_key, attempt, kind) of a report object key, or None."""
    parts = key.removeprefix(REPORT_PREFIX).split("/")
    if (
        not key.startswith(REPORT_PREFIX)
        or key.startswith(BATCH_REPORT_PREFIX)
        or len(parts) != 4
        or not parts[2].isdigit()
    ):
        return None
    kind = parts[3].removesuffix(".json")
    if kind not in REPORT_KINDS:
        return None
    return parts[0], parts[1], int(parts[2]), kind


def batch_report_key(pack_id: str, second: int, index: int) -> str:
    """The `index`-th batch of finished reports of the runs of pack `pack_id` that start at
    `second` (those its pack claim names): the claim's winner PUTs them in turn, each one
    conditionally, so two tasks that both started runs of the claim never overwrite a batch."""
    return f"{BATCH_REPORT_PREFIX}{pack_id}/{second:0{EPOCH_DIGITS}d}/{index:03d}.json"


def parse_batch_report_key(key: str) -> tuple[str, int, int] | None:
    """(pack_id, second, index) of a batch report key, or None."""
    parts = key.removeprefix(BATCH_REPORT_PREFIX).split("/")
    if not key.startswith(BATCH_REPORT_PREFIX) or len(parts) != 3:
        return None
    index = parts[2].removesuffix(".json")
    if not (parts[1].isdigit() and index.isdigit() and parts[2].endswith(".json")):
        return None
    return parts[0], int(parts[1]), int(index)


def claim_key(job_id: str, run_key: str, attempt: int) -> str:
    """One run's claim: taken by a runner only when its pack's claim went to another task
    that does not hold this run (the second level of the claim; pack_claim_key is the first)."""
    return f"claims/{job_id}/{run_key}/{attempt}.json"


def pack_claim_key(pack_id: str, second: int) -> str:
    """The claim of every run of pack `pack_id` (the pack the run was first dispatched in)
    that starts at `second`: one conditional PUT for all of them, naming them."""
    return f"claims/packs/{pack_id}/{second:0{EPOCH_DIGITS}d}.json"


def cancel_key(job_id: str, run_key: str, attempt: int) -> str:
    """A cancel request the runner polls for (through a presigned GET) while the script runs."""
    return f"cancels/{job_id}/{run_key}/{attempt}.json"


def pack_cancel_key(pack_id: str, second: int) -> str:
    """The mark that some run of pack claim `pack_id`/`second` was cancelled: its runner reads
    this one object at the claim's second, and each run's own cancel object only if it is there
    (one GET per pack claim, not one per run)."""
    return f"cancels/packs/{pack_id}/{second:0{EPOCH_DIGITS}d}.json"


def lock_key(job_id: str) -> str:
    """The job's lock: held by the run whose script runs, for overlap policies but ALLOW."""
    return f"locks/{job_id}.json"


def waiting_slot_key(job_id: str) -> str:
    """The run waiting for the job's lock (BUFFER_ONE, REPLACE): one at a time."""
    return f"locks/{job_id}.waiting.json"


def output_key(job_id: str, run_key: str, attempt: int) -> str:
    return f"outputs/{job_id}/{run_key}/{attempt}.log"


# -- a task's runs (RUN_REFS in its container overrides, read back from the task-stopped event) --

RunRef = tuple[str, str, int]  # job_id, run_key, attempt


def run_ref(ref: RunRef) -> str:
    """`job/run/attempt`: how a task's overrides, and a pack claim's list, name a run's attempt."""
    job_id, run_key, attempt = ref
    return f"{job_id}/{run_key}/{attempt}"


def format_run_refs(refs: list[RunRef]) -> str:
    return ",".join(run_ref(ref) for ref in refs)


def parse_run_refs(text: str) -> list[RunRef]:
    refs: list[RunRef] = []
    for ref in text.split(","):
        parts = ref.split("/")
        if len(parts) == 3 and parts[2].isdigit():
            refs.append((parts[0], parts[1], int(parts[2])))
    return refs


# -- quotas (items of the jobs table) ----------------------------------------------------------


def owner_pk(user_id: str) -> str:
    """An owner's item: its job count (the jobs-per-owner quota)."""
    return f"OWNER#{user_id}"


def quota_window_pk(user_id: str, quota: str, minute: int) -> str:
    """An owner's counter of one per-minute quota in one minute (epoch of its first second)."""
    return f"QUOTA#{user_id}#{quota}#{minute:0{EPOCH_DIGITS}d}"
