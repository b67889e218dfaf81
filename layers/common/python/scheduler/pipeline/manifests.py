"""A pack's manifest: what the runner reads (through one presigned URL) to run its scripts.

The runner gets no AWS credentials: the manifest lists presigned URLs scoped to exactly its runs
(GET each script, PUT each report, output and claim). Reports land under `reports/`, whose S3
notifications drive the run status function.

The manifest's own GET URL travels in the RunTask overrides, which DescribeTasks and the ECS
task-state events show to whoever may read them. So it is short-lived (the task's expected
start plus a margin, not the runs' lifetime) and consumed once: the manifest holds a presigned
DELETE of itself (`consume_url`), which the runner calls as soon as it has read it. Afterwards
the URL in the overrides answers 404 (the bucket is versioned: the DELETE leaves a delete
marker, and an older version needs `versionId`, which the signature does not cover), and soon
403 (expired). The runner parses this with its own
standard-library copy of the model (runner/jobrunner/manifest.py); a unit test keeps the two in
agreement.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from scheduler import keys
from scheduler.pipeline.dispatch_models import RunSpec
from scheduler.runs.run_models import ConcurrencyPolicy
from scheduler.times import Clock, epoch

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MANIFEST_VERSION = 1


class Manifests:
    """Writes a pack's manifest to S3 and presigns it and every URL inside."""

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        url_seconds: int,
        clock: Clock,
        manifest_url_seconds: int | None = None,
        started_report_seconds: int | None = None,
    ) -> None:
        # A run still running this long after its start reports "started"; None: at once.
        self._started_report_seconds = started_report_seconds
        self._s3 = s3
        self._bucket = bucket
        self._ttl = url_seconds
        self._clock = clock
        # The manifest's own URL (in the RunTask overrides): only until the task has read it.
        self._manifest_ttl = manifest_url_seconds or url_seconds

    def _lock_urls(self, run: RunSpec, ttl: int) -> dict[str, str]:
        """The job's lock and waiting slot, for the runner to apply the overlap policy."""
        lock, slot = keys.lock_key(run.job_id), keys.waiting_slot_key(run.job_id)
        one_waits = {"IfNoneMatch": "*"} if run.overlap is ConcurrencyPolicy.BUFFER_ONE else {}
        return {
            "take": self._url("put_object", lock, ttl, IfNoneMatch="*"),
            "read": self._url("get_object", lock, ttl),
            "release": self._url("delete_object", lock, ttl),
            "wait": self._url("put_object", slot, ttl, **one_waits),
            "read_wait": self._url("get_object", slot, ttl),
            "release_wait": self._url("delete_object", slot, ttl),
            "waiting_report": self._url(
                "put_object", keys.report_key(run.job_id, run.run_key, run.attempt, "waiting"), ttl
            ),
        }

    def _claim_urls(self, pack_claim: tuple[str, int], ttl: int) -> dict[str, str]:
        """The URLs of a pack claim, shared by its runs."""
        claim = keys.pack_claim_key(*pack_claim)
        return {
            # If-None-Match: * makes the first task to PUT it the only one to start the pack's
            # runs of that second, should the executor ever dispatch them twice.
            "claim_url": self._url("put_object", claim, ttl, IfNoneMatch="*"),
            "claim_read_url": self._url("get_object", claim, ttl),
            # Read at the second, once for the claim's runs: the run's own cancel object is
            # read then only if a cancel marked its claim.
            "pack_cancel_url": self._url("get_object", keys.pack_cancel_key(*pack_claim), ttl),
        }

    def _run_ttl(self, run: RunSpec) -> int:
        """Seconds a run's URLs must live: the base, its wait for its second, its timeout."""
        return self._ttl + run.timeout_seconds + max(0, run.not_before - epoch(self._clock()))

    def _url(self, method: str, key: str, ttl: int, **extra: str) -> str:
        params = {"Bucket": self._bucket, "Key": key, **extra}
        return str(self._s3.generate_presigned_url(method, Params=params, ExpiresIn=ttl))

    def publish(self, pack_id: str, runs: list[RunSpec]) -> str:
        entries = []
        ttls = [self._run_ttl(run) for run in runs]
        claims = [(run.claim_pack or pack_id, run.claim_second or run.not_before) for run in runs]
        # What runs share, signed once for as long as the longest of them needs it: the runner
        # keys what it does once by URL (a script fetched once, a pack claim PUT once, its
        # cancel mark read once), so runs of one script or claim must get the very same URL.
        script_ttls: dict[str, int] = {}
        # Per pack claim ("<pack>/<second>"): its runs' count and the longest of their URL TTLs.
        batches: dict[tuple[str, int], tuple[int, int]] = {}
        for run, ttl, pack_claim in zip(runs, ttls, claims, strict=True):
            script_ttls[run.script_key] = max(ttl, script_ttls.get(run.script_key, 0))
            count, longest = batches.get(pack_claim, (0, 0))
            batches[pack_claim] = (count + 1, max(longest, ttl))
        script_urls = {key: self._url("get_object", key, ttl) for key, ttl in script_ttls.items()}
        claim_urls = {
            pack_claim: self._claim_urls(pack_claim, ttl)
            for pack_claim, (_, ttl) in batches.items()
        }
        for run, ttl, pack_claim in zip(runs, ttls, claims, strict=True):
            ids = (run.job_id, run.run_key, run.attempt)
            entry: dict[str, Any] = {
                "job_id": run.job_id,
                "run_key": run.run_key,
                "attempt": run.attempt,
                "scheduled_at": run.scheduled_at,
                "not_before": run.not_before,
                "timeout_seconds": run.timeout_seconds,
                "parameters": run.parameters,
                "script_url": script_urls[run.script_key],
                "started_url": self._url("put_object", keys.report_key(*ids, "started"), ttl),
                "finished_url": self._url("put_object", keys.report_key(*ids, "finished"), ttl),
                "output_url": self._url("put_object", keys.output_key(*ids), ttl),
                **claim_urls[pack_claim],
                # The run's own claim is for a task that lost the pack claim (claims.py).
                "run_claim_url": self._url(
                    "put_object", keys.claim_key(*ids), ttl, IfNoneMatch="*"
                ),
                "cancel_url": self._url("get_object", keys.cancel_key(*ids), ttl),
                # Its finished report may travel in a batch of its pack claim's runs.
                "batch": _batch_name(*pack_claim),
                "overlap": run.overlap.value,
            }
            if run.overlap is not ConcurrencyPolicy.ALLOW:
                entry["lock"] = self._lock_urls(run, ttl)
            entries.append(entry)
        key = keys.manifest_key(pack_id)
        document: dict[str, Any] = {
            "version": MANIFEST_VERSION,
            "pack_id": pack_id,
            "runs": entries,
            # Per pack claim, the conditional PUTs of the batches of its runs' finished reports
            # (one each at most, so as many as it has runs), to be used in turn from the first.
            "batches": {
                _batch_name(pack, second): [
                    self._url(
                        "put_object",
                        keys.batch_report_key(pack, second, index),
                        ttl,
                        IfNoneMatch="*",
                    )
                    for index in range(count)
                ]
                for (pack, second), (count, ttl) in batches.items()
            },
            # The runner deletes the manifest once read: the URL in the overrides is then dead.
            "consume_url": self._url("delete_object", key, self._manifest_ttl),
        }
        if self._started_report_seconds is not None:
            document["started_report_seconds"] = self._started_report_seconds
        self._s3.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=json.dumps(document).encode(),
            ContentType="application/json",
        )
        return self._url("get_object", key, self._manifest_ttl)


def _batch_name(pack_id: str, second: int) -> str:
    return f"{pack_id}/{second}"
