"""Run notifications to the deployment's SNS topic: the body is the RunNotification as JSON; the
owner, job id and event type are message attributes, so a subscriber filters on its own jobs
(an SNS filter policy on `user_id`) without reading anyone else's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from scheduler.runs.run_models import RunNotification

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

logger = Logger(child=True)


class SnsRunNotifier:
    def __init__(self, sns: SNSClient, topic_arn: str) -> None:
        self._sns = sns
        self._topic = topic_arn

    def notify(self, notification: RunNotification) -> None:
        attributes = {
            "user_id": notification.user_id,
            "job_id": notification.job_id,
            "event_type": notification.event_type.value,
        }
        try:
            self._sns.publish(
                TopicArn=self._topic,
                Message=notification.model_dump_json(),
                MessageAttributes={
                    name: {"DataType": "String", "StringValue": value}
                    for name, value in attributes.items()
                },
            )
        except (ClientError, BotoCoreError):
            # Never block the pipeline on a notification; the run record has it all.
            logger.exception("could not send a run notification", extra=attributes)
