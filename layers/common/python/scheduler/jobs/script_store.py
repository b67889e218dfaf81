"""Scripts in S3, content-addressed: the same source is one object, written idempotently."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from scheduler import keys
from scheduler.aws.client_errors import error_code, raise_if_throttled
from scheduler.errors import ServiceUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


# S3 answers 409 to a conditional write racing another one on the same key: try again.
CONFLICT_TRIES = 3


class S3ScriptStore:
    def __init__(self, s3: S3Client, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def put(self, source: str) -> tuple[str, str]:
        """Store `source`; return its (sha256, key)."""
        body = source.encode()
        digest = hashlib.sha256(body).hexdigest()
        key = keys.script_key(digest)
        for _ in range(CONFLICT_TRIES):
            try:
                # Only if absent: the bucket is versioned, and a thousand jobs sharing a script
                # would otherwise keep a thousand identical versions of it.
                self._s3.put_object(
                    Bucket=self._bucket,
                    Key=key,
                    Body=body,
                    ContentType="text/x-python; charset=utf-8",
                    Metadata={"sha256": digest},
                    IfNoneMatch="*",
                )
            except ClientError as exc:
                code = error_code(exc)
                if code == "PreconditionFailed":  # stored already: same key, same content
                    break
                if code == "ConditionalRequestConflict":  # another write of it in flight
                    continue
                raise_if_throttled(exc)
                raise
            break
        else:
            raise ServiceUnavailable("the script store is busy; retry shortly")
        return digest, key
