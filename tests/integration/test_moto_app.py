"""The local stack's moto server (`devstack.moto_app`) as a process, over HTTP: what it
answered survives `kill -9` (DynamoDB, S3 through a presigned URL, SQS messages in flight with
their receipt handles), the journal is compacted into snapshots, a record cut short by the
kill is dropped, and its faster queries answer exactly what a scan says they should."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from devstack import moto_app
from devstack.moto_server import MotoServer

QUEUE_ATTRIBUTES = {"FifoQueue": "true", "ContentBasedDeduplication": "true"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Moto:
    def __init__(self, state_dir: Path | None, port: int, *arguments: str) -> None:
        self.state_dir = state_dir
        self.port = port
        self.arguments = arguments
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Moto:
        server = MotoServer("127.0.0.1", self.port, Path("/dev/null"))
        command = [sys.executable, "-m", "devstack.moto_app", "-p", str(self.port)]
        if self.state_dir is not None:
            command += ["--state-dir", str(self.state_dir)]
        self.process = subprocess.Popen(
            [*command, *self.arguments],
            env=server.environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "moto_app exited"
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        pytest.fail("moto_app did not answer")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 1}),
        )


@pytest.fixture
def servers() -> Iterator[list[Moto]]:
    started: list[Moto] = []
    yield started
    for server in started:
        if server.process is not None and server.process.poll() is None:
            server.kill()


def _start(servers: list[Moto], state_dir: Path | None, port: int, *arguments: str) -> Moto:
    server = Moto(state_dir, port, *arguments)
    servers.append(server)
    return server.start()


def _table(dynamodb: Any, name: str) -> None:
    dynamodb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "owner", "AttributeType": "S"},
            {"AttributeName": "created", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_owner",
                "KeySchema": [
                    {"AttributeName": "owner", "KeyType": "HASH"},
                    {"AttributeName": "created", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def test_what_was_answered_survives_kill_9(tmp_path: Path, servers: list[Moto]) -> None:
    state, port = tmp_path / "aws", _free_port()
    # snapshots every 25 journaled requests: this history spans several
    moto = _start(servers, state, port, "--snapshot-every", "25")
    dynamodb, s3, sqs = moto.client("dynamodb"), moto.client("s3"), moto.client("sqs")
    _table(dynamodb, "jobs")
    for i in range(60):
        dynamodb.put_item(
            TableName="jobs",
            Item={"pk": {"S": f"job{i}"}, "sk": {"S": "job"}, "n": {"N": str(i)}},
            ConditionExpression="attribute_not_exists(pk)",
        )
    s3.create_bucket(Bucket="local-scripts")
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": "local-scripts", "Key": "out.txt"}, ExpiresIn=1
    )
    time.sleep(1.5)  # expired by the time the journal is replayed: moto does not check
    request = urllib.request.Request(
        url, data=b"output", method="PUT", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
    queue = sqs.create_queue(
        QueueName="dispatch.fifo", Attributes={**QUEUE_ATTRIBUTES, "VisibilityTimeout": "120"}
    )["QueueUrl"]
    for group in ("a", "b", "c"):
        sqs.send_message(QueueUrl=queue, MessageBody=group, MessageGroupId=group)
    (done,) = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=done["ReceiptHandle"])
    (in_flight,) = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]

    moto.kill()
    assert len(list(state.glob("journal-*.log"))) <= 2, "the journal was not compacted"
    moto = _start(servers, state, port)
    dynamodb, s3, sqs = moto.client("dynamodb"), moto.client("s3"), moto.client("sqs")

    items = dynamodb.scan(TableName="jobs")["Items"]
    assert sorted(int(item["n"]["N"]) for item in items) == list(range(60))
    assert s3.get_object(Bucket="local-scripts", Key="out.txt")["Body"].read() == b"output"
    # the message in flight is still in flight (invisible), the third one waits
    visible = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in visible] == [
        ({"a", "b", "c"} - {done["Body"], in_flight["Body"]}).pop()
    ]
    # and its receipt handle is still the one its consumer holds
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=in_flight["ReceiptHandle"])
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"  # only `visible` now
    # a conditional write replayed in order still refuses a second create
    with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException):
        dynamodb.put_item(
            TableName="jobs",
            Item={"pk": {"S": "job0"}, "sk": {"S": "job"}},
            ConditionExpression="attribute_not_exists(pk)",
        )


def test_a_record_cut_short_by_the_kill_is_dropped(tmp_path: Path, servers: list[Moto]) -> None:
    state, port = tmp_path / "aws", _free_port()
    moto = _start(servers, state, port)
    dynamodb = moto.client("dynamodb")
    _table(dynamodb, "jobs")
    dynamodb.put_item(TableName="jobs", Item={"pk": {"S": "kept"}, "sk": {"S": "job"}})
    moto.kill()
    (journal,) = state.glob("journal-*.log")
    with journal.open("ab") as out:  # half a record: the kill came while it was written
        out.write(moto_app._HEADER.pack(1000, 0) + b"x" * 10)

    moto = _start(servers, state, port)
    items = moto.client("dynamodb").scan(TableName="jobs")["Items"]
    assert [item["pk"]["S"] for item in items] == ["kept"]


def test_without_a_state_dir_nothing_is_kept(tmp_path: Path, servers: list[Moto]) -> None:
    port = _free_port()
    moto = _start(servers, None, port)
    _table(moto.client("dynamodb"), "jobs")
    moto.kill()
    moto = _start(servers, None, port)
    assert moto.client("dynamodb").list_tables()["TableNames"] == []


def test_queries_answer_what_a_scan_says(servers: list[Moto]) -> None:
    """Queries on the table's hash key and on a GSI (index kept on every put, update, delete
    and transaction, committed or cancelled) against the same items found by a full scan."""
    moto = _start(servers, None, _free_port())
    dynamodb = moto.client("dynamodb")
    _table(dynamodb, "t")
    rng = random.Random(13)
    owners = ["alice", "bob", "carol"]

    def item(pk: str, sk: str) -> dict[str, Any]:
        return {
            "pk": {"S": pk},
            "sk": {"S": sk},
            "owner": {"S": rng.choice(owners)},
            "created": {"S": f"{rng.randrange(1000):04d}"},
        }

    for step in range(300):
        pk, sk = f"p{rng.randrange(8)}", f"s{rng.randrange(6)}"
        action = rng.random()
        if action < 0.4:
            dynamodb.put_item(TableName="t", Item=item(pk, sk))
        elif action < 0.6:
            dynamodb.update_item(
                TableName="t",
                Key={"pk": {"S": pk}, "sk": {"S": sk}},
                UpdateExpression="SET #o = :o, created = :c",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={
                    ":o": {"S": rng.choice(owners)},
                    ":c": {"S": f"{step:04d}"},
                },
            )
        elif action < 0.7:
            dynamodb.delete_item(TableName="t", Key={"pk": {"S": pk}, "sk": {"S": sk}})
        else:
            # a transaction that fails half the time: its writes must leave no trace
            condition = "attribute_exists(pk)" if rng.random() < 0.5 else "attribute_not_exists(x)"
            with contextlib.suppress(dynamodb.exceptions.TransactionCanceledException):
                dynamodb.transact_write_items(
                    TransactItems=[
                        {"Put": {"TableName": "t", "Item": item(pk, f"t{step}")}},
                        {
                            "ConditionCheck": {
                                "TableName": "t",
                                "Key": {"pk": {"S": "p0"}, "sk": {"S": "s0"}},
                                "ConditionExpression": condition,
                            }
                        },
                    ]
                )
        if step % 25:
            continue
        everything = dynamodb.scan(TableName="t")["Items"]
        for owner in owners:
            expected = sorted(
                (i for i in everything if i["owner"]["S"] == owner),
                key=lambda i: (i["created"]["S"], i["pk"]["S"], i["sk"]["S"]),
            )
            got = dynamodb.query(
                TableName="t",
                IndexName="by_owner",
                KeyConditionExpression="#o = :o",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":o": {"S": owner}},
            )["Items"]
            assert [i["created"]["S"] for i in got] == [i["created"]["S"] for i in expected]
            assert sorted(map(str, got)) == sorted(map(str, expected))
        for partition in {i["pk"]["S"] for i in everything} | {"nothing"}:
            expected = sorted(
                (i for i in everything if i["pk"]["S"] == partition), key=lambda i: i["sk"]["S"]
            )
            got = dynamodb.query(
                TableName="t",
                KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": {"S": partition}},
            )["Items"]
            assert got == expected


# moto's own clock moved by the script below; the patched check runs in a process of its own,
# so that no other test's moto is patched.
_RETENTION_SCRIPT = """
import datetime as dt
import json

import boto3
from moto import mock_aws
from moto.core import utils

import devstack.moto_fast  # noqa: F401  (the patch under test)

real = utils.utcnow
with mock_aws():
    sqs = boto3.client("sqs", region_name="us-east-1")
    answers = []
    for later in (30, 90):
        url = sqs.create_queue(
            QueueName=f"kept-{later}", Attributes={"MessageRetentionPeriod": "60"}
        )["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody=f"after {later} s")
        sent = real()
        utils.utcnow = lambda: sent + dt.timedelta(seconds=later)
        received = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)
        answers.append([m["Body"] for m in received.get("Messages", [])])
        utils.utcnow = real
    print(json.dumps(answers))
"""


def test_a_receive_hands_out_only_messages_within_the_retention_period() -> None:
    """moto_fast's cheaper retention check (moto's computed every attribute of the queue for
    each message received) keeps moto's answer: kept 30 s into a 60 s retention, gone at 90."""
    done = subprocess.run(
        [sys.executable, "-c", _RETENTION_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=os.environ
        | {
            "PYTHONPATH": str(Path(moto_app.__file__).parents[1]),  # devstack's directory
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        },
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [["after 30 s"], []]
