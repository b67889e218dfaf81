"""Creates the template's tables, buckets and queues through the AWS APIs (moto locally)."""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.exceptions import ClientError

from devstack.template import Stack

_TABLE_KEYS = (
    "AttributeDefinitions",
    "KeySchema",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "BillingMode",
    "StreamSpecification",
)

_QUEUE_EXISTS = {"QueueAlreadyExists", "QueueNameExists", "AWS.SimpleQueueService.QueueNameExists"}


def create_all(stack: Stack, endpoint_url: str | None = None) -> None:
    """Create every resource the local stack emulates; existing ones are left as they are."""
    session = boto3.session.Session()
    dynamodb = session.client("dynamodb", endpoint_url=endpoint_url)
    existing_tables = set(dynamodb.list_tables()["TableNames"])
    for logical, resource in stack.of_type("AWS::DynamoDB::Table").items():
        name = stack.physical_names[logical]
        if name in existing_tables:
            continue
        props = resource["Properties"]
        args: dict[str, Any] = {k: props[k] for k in _TABLE_KEYS if k in props}
        dynamodb.create_table(TableName=name, **args)
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)

    _create_queues(stack, session.client("sqs", endpoint_url=endpoint_url))

    _create_secrets(stack, session.client("secretsmanager", endpoint_url=endpoint_url))

    sns = session.client("sns", endpoint_url=endpoint_url)
    for logical in stack.of_type("AWS::SNS::Topic"):
        sns.create_topic(Name=stack.physical_names[logical])  # idempotent

    ecs = session.client("ecs", endpoint_url=endpoint_url)
    for logical in stack.of_type("AWS::ECS::Cluster"):
        ecs.create_cluster(clusterName=stack.physical_names[logical])
    for logical, resource in stack.of_type("AWS::ECS::TaskDefinition").items():
        props = stack.resolve(resource["Properties"])
        ecs.register_task_definition(
            family=stack.physical_names[logical],
            requiresCompatibilities=props["RequiresCompatibilities"],
            networkMode=props["NetworkMode"],
            cpu=str(props["Cpu"]),
            memory=str(props["Memory"]),
            containerDefinitions=[
                _container_definition(container, int(props["Memory"]))
                for container in props["ContainerDefinitions"]
            ],
            volumes=[{"name": volume["Name"]} for volume in props.get("Volumes", [])],
        )

    s3 = session.client("s3", endpoint_url=endpoint_url)
    for logical, resource in stack.of_type("AWS::S3::Bucket").items():
        name = stack.physical_names[logical]
        props = resource.get("Properties", {})
        try:
            s3.create_bucket(Bucket=name)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            continue
        if "VersioningConfiguration" in props:
            s3.put_bucket_versioning(
                Bucket=name, VersioningConfiguration=props["VersioningConfiguration"]
            )
        if "BucketEncryption" in props:
            s3.put_bucket_encryption(
                Bucket=name,
                ServerSideEncryptionConfiguration={
                    # CloudFormation's property name differs from the API's.
                    "Rules": [
                        {
                            "ApplyServerSideEncryptionByDefault": rule[
                                "ServerSideEncryptionByDefault"
                            ]
                        }
                        for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
                    ]
                },
            )
        notifications = stack.resolve(props.get("NotificationConfiguration", {}))
        if notifications.get("QueueConfigurations"):
            s3.put_bucket_notification_configuration(
                Bucket=name,
                NotificationConfiguration={
                    "QueueConfigurations": [
                        {
                            "QueueArn": queue["Queue"],
                            "Events": [queue["Event"]],
                            "Filter": {"Key": {"FilterRules": queue["Filter"]["S3Key"]["Rules"]}},
                        }
                        for queue in notifications["QueueConfigurations"]
                    ]
                },
            )
        if "PublicAccessBlockConfiguration" in props:
            s3.put_public_access_block(
                Bucket=name,
                PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"],
            )


def _container_definition(container: dict[str, Any], memory: int) -> Any:
    """A container definition of the template in the API's terms (what the docker backend
    reads back: its shape)."""
    definition: dict[str, Any] = {
        "name": container["Name"],
        "image": container["Image"],
        "essential": container.get("Essential", True),
        "memory": memory,
        "readonlyRootFilesystem": bool(container.get("ReadonlyRootFilesystem", False)),
        "mountPoints": [
            {
                "sourceVolume": mount["SourceVolume"],
                "containerPath": mount["ContainerPath"],
                "readOnly": bool(mount.get("ReadOnly", False)),
            }
            for mount in container.get("MountPoints", [])
        ],
        "environment": [
            {"name": variable["Name"], "value": str(variable["Value"])}
            for variable in container.get("Environment", [])
        ],
    }
    if "StopTimeout" in container:
        definition["stopTimeout"] = int(container["StopTimeout"])
    return definition


def _create_secrets(stack: Stack, secrets: Any) -> None:
    """The template generates its secrets' values; the local stack gives each its own."""
    for logical in stack.of_type("AWS::SecretsManager::Secret"):
        name, value = stack.physical_names[logical], stack.secrets[logical]
        try:
            secrets.create_secret(Name=name, SecretString=value)
        except secrets.exceptions.ResourceExistsException:
            secrets.put_secret_value(SecretId=name, SecretString=value)


def _create_queues(stack: Stack, sqs: Any) -> None:
    queues = stack.of_type("AWS::SQS::Queue")
    # Dead-letter queues first: a queue's RedrivePolicy names its DLQ's ARN.
    ordered = sorted(queues, key=lambda name: "RedrivePolicy" in queues[name].get("Properties", {}))
    for logical in ordered:
        props = stack.resolve(queues[logical].get("Properties", {}))
        attributes = {
            key: _queue_attribute(value)
            for key, value in props.items()
            if key not in ("QueueName", "Tags")
        }
        try:
            sqs.create_queue(QueueName=stack.physical_names[logical], Attributes=attributes)
        except ClientError as error:
            # It exists with other attributes (changed since it was created): left as it is.
            if error.response.get("Error", {}).get("Code") not in _QUEUE_EXISTS:
                raise


def _queue_attribute(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)
