"""Scripts in S3, content-addressed: the same source is one object, written idempotently."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from scheduler import keys
from scheduler.aws.client_errors import raise_if_throttled

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class S3ScriptStore:
    def __init__(self, s3: S3Client, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def put(self, source: str) -> tuple[str, str]:
        """Store `source`; return its (sha256, key)."""
        body = source.encode()
        digest = hashlib.sha256(body).hexdigest()
        key = keys.script_key(digest)
        try:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=body,
                ContentType="text/x-python; charset=utf-8",
                Metadata={"sha256": digest},
            )
        except ClientError as exc:
            raise_if_throttled(exc)
            raise
        return digest, key
