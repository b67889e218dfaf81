"""The S3 objects a run leaves under the scripts bucket: the runner's reports (`reports/`) and
its captured output (`outputs/`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError
from pydantic import ValidationError

from scheduler.aws.client_errors import error_code, raise_if_throttled
from scheduler.runs.run_models import RunReport

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = Logger(child=True)


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

    def link(self, key: str, seconds: int) -> str:
        params = {"Bucket": self._bucket, "Key": key}
        return str(self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds))
