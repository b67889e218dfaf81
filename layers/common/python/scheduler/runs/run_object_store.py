"""The S3 objects a run leaves under the scripts bucket: the runner's reports (`reports/`), its
captured output (`outputs/`), and the cancel channel (`cancels/`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError
from pydantic import ValidationError

from scheduler import keys
from scheduler.aws.client_errors import error_code, raise_if_throttled
from scheduler.runs.run_models import Run, RunReport

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = Logger(child=True)

# At most one batch of finished reports per run of a pack claim (the manifest presigns as many).
MAX_BATCHES = 100


class S3RunObjects:
    def __init__(self, s3: S3Client, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def report(self, key: str) -> RunReport | None:
        try:
            body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
            return RunReport.model_validate_json(body)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise_if_throttled(exc)
            raise
        except ValidationError:
            logger.warning("malformed run report", key=key)
            return None

    def batch_reports(self, key: str) -> list[RunReport]:
        return self._batch(key) or []

    def finished_report(self, run: Run) -> RunReport | None:
        own = self.report(keys.report_key(run.job_id, run.key, run.attempt, "finished"))
        if own is not None or run.claim_pack is None or run.claim_second is None:
            return own
        wanted = (run.job_id, run.key, run.attempt)
        # Batches are PUT in turn from index 0, each conditionally: the first missing one ends them.
        for index in range(MAX_BATCHES):
            batch = self._batch(keys.batch_report_key(run.claim_pack, run.claim_second, index))
            if batch is None:
                return None
            found = [r for r in batch if (r.job_id, r.run_key, r.attempt) == wanted]
            if found:
                return found[0]
        return None

    def _batch(self, key: str) -> list[RunReport] | None:
        """The reports of the batch at `key`; None if there is no such object."""
        body = self._read(key)
        if body is None:
            return None
        try:
            entries = json.loads(body).get("reports")
        except (ValueError, AttributeError):
            entries = None
        if not isinstance(entries, list):
            logger.warning("malformed batch report", key=key)
            return []
        reports = []
        for entry in entries:
            try:
                reports.append(RunReport.model_validate(entry))
            except ValidationError:
                logger.warning("malformed entry in a batch report", key=key)
        return reports

    def link(self, key: str, seconds: int) -> str:
        params = {"Bucket": self._bucket, "Key": key}
        return str(self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds))

    def request_cancel(self, run: Run, reason: str) -> None:
        """The cancel object: the runner polls it while the script runs (found: SIGTERM). Then
        the pack claim's mark, for a claimed run: at the second the runner reads the mark, and
        the run's own object only if the mark is there (found: the script never starts)."""
        body = json.dumps({"cancelled": True, "reason": reason}).encode()
        self._s3.put_object(
            Bucket=self._bucket, Key=keys.cancel_key(run.job_id, run.key, run.attempt), Body=body
        )
        if run.claim_pack is not None and run.claim_second is not None:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=keys.pack_cancel_key(run.claim_pack, run.claim_second),
                Body=b"{}",
            )

    def cancel_requested(self, job_id: str, run_key: str, attempt: int) -> bool:
        return self._exists(keys.cancel_key(job_id, run_key, attempt))

    def attempt_claimed(self, run: Run) -> bool:
        if self._exists(keys.claim_key(run.job_id, run.key, run.attempt)):
            return True
        if run.claim_pack is None or run.claim_second is None:
            return True  # its pack claim cannot be named: assume its script may have started
        body = self._read(keys.pack_claim_key(run.claim_pack, run.claim_second))
        if body is None:
            return False
        try:
            named = json.loads(body).get("runs")
        except (ValueError, AttributeError):
            return True  # unreadable: the winner may hold it
        if not isinstance(named, list):
            return True
        return keys.run_ref((run.job_id, run.key, run.attempt)) in named

    def _exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return False
            raise_if_throttled(exc)
            raise
        return True

    def _read(self, key: str) -> bytes | None:
        try:
            return self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise_if_throttled(exc)
            raise

    def release_lock(self, job_id: str, run_key: str, attempt: int) -> None:
        key = keys.lock_key(job_id)
        body = self._read(key)
        if body is None:
            return
        try:
            holder = json.loads(body)
        except ValueError:
            holder = {}
        if holder.get("run_key") == run_key and holder.get("attempt") == attempt:
            self._s3.delete_object(Bucket=self._bucket, Key=key)
            logger.info("job lock released for a dead task", job_id=job_id, run_key=run_key)
