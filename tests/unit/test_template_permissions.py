"""Least privilege, checked: each function's DynamoDB and S3 grants in template.yaml are exactly
what its code calls, by the table below. moto does not enforce IAM, so without this a missing
grant (the executor's presigned claims/ PUTs were refused on AWS) passes every other test, and
an excess one (create could write anywhere in the bucket) goes unseen.

The table is the code's side: keep it in step with the repositories and object stores (which
DynamoDB operations each service's path reaches; a transaction needs PutItem, UpdateItem or
DeleteItem per item; a presigned URL is signed with the function's own rights)."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.template import load

# What a SAM policy template grants, were one to come back.
SAM_TEMPLATES = {
    "DynamoDBCrudPolicy": (
        "dynamodb",
        "GetItem DeleteItem PutItem Scan Query UpdateItem BatchWriteItem BatchGetItem "
        "DescribeTable ConditionCheckItem",
    ),
    "DynamoDBReadPolicy": ("dynamodb", "GetItem Scan Query BatchGetItem DescribeTable"),
    "S3WritePolicy": ("s3", "PutObject PutObjectAcl PutLifecycleConfiguration"),
    "S3ReadPolicy": ("s3", "GetObject ListBucket GetBucketLocation GetObjectVersion"),
    "S3CrudPolicy": ("s3", "GetObject ListBucket PutObject DeleteObject"),
}

# Writes of a run of the pipeline (create/update/resume take an occurrence due soon as the
# watcher does: pipeline/due_runs.py): the run, its queued mark, a dead man's switch item, the
# job's next occurrence (JobRepository.advance).
_TAKE_RUNS = {
    "JobsTable": {"UpdateItem"},
    "ScheduleTable": {"PutItem", "DeleteItem"},
    "RunsTable": {"BatchGetItem", "GetItem", "PutItem", "UpdateItem"},
}
# How an attempt ends (runs/run_outcomes.py): the run, a retry's schedule item (and a stopped
# task's pack place item, deleted with its owner's count: UpdateItem on the jobs table), the job's
# failure count and its pause after too many (JobRepository.pause_for_failures); an unreported
# attempt's cancel object (HEAD) and its job's overlap lock, freed if a dead task held it; and
# ListBucket, without which S3 answers a missing object 403, not 404.
_CONCLUDE_RUNS = {
    "JobsTable": {"GetItem", "UpdateItem"},
    "ScheduleTable": {"PutItem", "DeleteItem"},
    "RunsTable": {"BatchGetItem", "GetItem", "UpdateItem"},
    "ScriptsBucket": {"ListBucket"},
    "ScriptsBucket/reports/*": {"GetObject"},
    "ScriptsBucket/cancels/*": {"GetObject"},
    "ScriptsBucket/locks/*": {"GetObject", "DeleteObject"},
}
# A run concluded unreported (a stopped task, the deadline sweep) whose runner never claimed it:
# its script never started, and the attempt is not counted (the run's claim, its pack's claim).
_UNSTARTED_RUNS = {"ScriptsBucket/claims/*": {"GetObject"}}
# A cancel (runs/run_cancels.py): the run (and the owner's concurrent_runs place it gives back),
# and the cancel object the runner reads at the run's second and polls while it runs.
_CANCEL_RUNS = {
    "JobsTable": {"UpdateItem"},
    "RunsTable": {"BatchGetItem", "GetItem", "UpdateItem"},
    "ScriptsBucket/cancels/*": {"PutObject"},
}


def merged(*parts: dict[str, set[str]]) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {}
    for part in parts:
        for resource, actions in part.items():
            result.setdefault(resource, set()).update(actions)
    return result


NEEDS: dict[str, dict[str, set[str]]] = {
    "CreateJobFunction": merged(
        # the job and its name guard, with the first schedule item and the owner's job count
        {"JobsTable": {"PutItem", "UpdateItem"}},
        {"ScheduleTable": {"PutItem"}},
        {"IdempotencyTable": {"GetItem", "PutItem", "UpdateItem", "DeleteItem"}},
        {"ScriptsBucket/scripts/*": {"PutObject"}},
        _TAKE_RUNS,
    ),
    "GetJobFunction": {
        "JobsTable": {"GetItem"},
        "RunsTable": {"BatchGetItem", "Query"},
    },  # and its last run
    "PreviewScheduleFunction": {"JobsTable": {"GetItem"}},
    # the owner's jobs from the index, their next runs from the table (not projected: the
    # watcher moves them), their last runs
    "ListJobsFunction": {
        "JobsTable/index/by_owner": {"Query"},
        "JobsTable": {"BatchGetItem"},
        "RunsTable": {"BatchGetItem", "Query"},
    },
    "UpdateJobFunction": merged(
        {"JobsTable": {"GetItem", "UpdateItem"}, "ScheduleTable": {"PutItem", "DeleteItem"}},
        {"ScriptsBucket/scripts/*": {"PutObject"}},
        _TAKE_RUNS,
    ),
    # an occurrence past its second that no tick took is taken before the pause or delete
    "PauseJobFunction": merged(
        {"JobsTable": {"GetItem", "UpdateItem"}, "ScheduleTable": {"DeleteItem"}}, _TAKE_RUNS
    ),
    "ResumeJobFunction": merged(
        {"JobsTable": {"GetItem", "UpdateItem"}, "ScheduleTable": {"PutItem"}}, _TAKE_RUNS
    ),
    "DeleteJobFunction": merged(
        # the job and its name guard; the owner's job count (quotas)
        {"JobsTable": {"GetItem", "DeleteItem", "UpdateItem"}, "ScheduleTable": {"DeleteItem"}},
        _TAKE_RUNS,
    ),
    "ListRunsFunction": {"JobsTable": {"GetItem"}, "RunsTable": {"BatchGetItem", "Query"}},
    "GetRunFunction": {"JobsTable": {"GetItem"}, "RunsTable": {"BatchGetItem", "GetItem"}},
    "CancelRunFunction": merged({"JobsTable": {"GetItem"}}, _CANCEL_RUNS),
    "GetRunOutputFunction": {
        "JobsTable": {"GetItem"},
        "RunsTable": {"BatchGetItem", "GetItem"},
        "ScriptsBucket/outputs/*": {"GetObject"},  # the presigned link
    },
    "RunJobFunction": {
        "JobsTable": {"GetItem", "UpdateItem"},  # and the owner's per-minute quota counters
        "RunsTable": {"PutItem", "UpdateItem"},  # the run with its fallback item, then QUEUED
        "ScheduleTable": {"PutItem", "DeleteItem"},
    },
    "BackfillJobFunction": {
        "JobsTable": {"GetItem", "UpdateItem"},  # and the owner's runs-per-minute counter
        "RunsTable": {"BatchGetItem", "GetItem", "PutItem", "UpdateItem"},
        "ScheduleTable": {"PutItem", "DeleteItem"},
    },
    "WatcherFunction": merged(
        {"JobsTable": {"BatchGetItem"}},  # the jobs of a tick's items
        {"ScheduleTable": {"Query", "GetItem", "PutItem"}},  # due items, the cursor
        {"RunsTable/index/in_flight": {"Query"}},  # the deadline sweep
        _TAKE_RUNS,
        _CONCLUDE_RUNS,
        _UNSTARTED_RUNS,
    ),
    "ExecutorFunction": {
        # a run of a paused or deleted job is skipped; the owner's concurrent_runs places
        "JobsTable": {"BatchGetItem", "UpdateItem"},
        # claim, script snapshot, the pack's dispatch record (read back in a batch), skipped
        "RunsTable": {"BatchGetItem", "GetItem", "PutItem", "UpdateItem"},
        # a run with no place waits for a schedule item; a pack's place item (put with its
        # owner's count, deleted when its RunTask fails)
        "ScheduleTable": {"PutItem", "DeleteItem"},
        # signed into the manifest and its runs' URLs (pipeline/manifests.py)
        "ScriptsBucket/scripts/*": {"GetObject"},
        # DeleteObject: the runner consumes its manifest (a presigned DELETE in it)
        "ScriptsBucket/manifests/*": {"GetObject", "PutObject", "DeleteObject"},
        "ScriptsBucket/reports/*": {"PutObject"},
        "ScriptsBucket/outputs/*": {"PutObject"},
        # the pack claim (PUT, and GET by a task that lost it) and a run's own claim
        "ScriptsBucket/claims/*": {"GetObject", "PutObject"},
        "ScriptsBucket/cancels/*": {"GetObject"},  # read at the second, polled while it runs
        "ScriptsBucket/locks/*": {"GetObject", "PutObject", "DeleteObject"},  # overlap policy
    },
    # a REPLACE run waiting for the job's lock has the runs it replaces cancelled
    "RunReportsFunction": merged(_CONCLUDE_RUNS, _CANCEL_RUNS),
    "TaskEventsFunction": merged(_CONCLUDE_RUNS, _UNSTARTED_RUNS),
    "ApiDocsFunction": {},
}


def _name(resource: Any) -> str:
    """`JobsTable`, `JobsTable/index/by_owner` or `ScriptsBucket/claims/*` for a resource."""
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        logical, attribute = resource["Fn::GetAtt"]
        assert attribute == "Arn", resource
        return str(logical)
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        text = str(resource["Fn::Sub"])
        assert text.startswith("${"), resource
        assert ".Arn}" in text, resource
        logical, rest = text[2:].split(".Arn}", 1)
        return f"{logical}{rest}"
    if isinstance(resource, dict) and "Ref" in resource:
        return str(resource["Ref"])
    raise AssertionError(f"a resource this test cannot name: {resource!r}")


def granted(function: dict[str, Any]) -> dict[str, set[str]]:
    """The function's DynamoDB and S3 grants: resource name -> actions."""
    grants: dict[str, set[str]] = {}
    for policy in function["Properties"].get("Policies") or []:
        for template, (service, actions) in SAM_TEMPLATES.items():
            if template in policy:
                target = policy[template]
                table = target.get("TableName") or target.get("BucketName")
                grants.setdefault(_name(table), set()).update(actions.split())
                if service == "dynamodb":
                    grants.setdefault(f"{_name(table)}/index/*", set()).update(actions.split())
        for statement in policy.get("Statement", []):
            actions = statement["Action"]
            actions = [actions] if isinstance(actions, str) else actions
            resources = statement["Resource"]
            resources = resources if isinstance(resources, list) else [resources]
            for action in actions:
                service, _, operation = action.partition(":")
                if service not in ("dynamodb", "s3"):
                    continue
                assert statement["Effect"] == "Allow"
                for resource in resources:
                    grants.setdefault(_name(resource), set()).add(operation)
    return grants


FUNCTIONS = {
    name: resource
    for name, resource in load()["Resources"].items()
    if resource["Type"] == "AWS::Serverless::Function"
}


def test_the_table_covers_every_function() -> None:
    assert set(NEEDS) == set(FUNCTIONS)


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_each_function_is_granted_exactly_what_its_code_calls(function: str) -> None:
    grants = granted(FUNCTIONS[function])
    needs = NEEDS[function]
    missing = {
        r: sorted(a - grants.get(r, set())) for r, a in needs.items() if a - grants.get(r, set())
    }
    excess = {
        r: sorted(a - needs.get(r, set())) for r, a in grants.items() if a - needs.get(r, set())
    }
    assert not missing, f"{function} lacks grants its code needs: {missing}"
    assert not excess, f"{function} is granted what its code never calls: {excess}"


def test_a_missing_grant_and_a_sam_template_are_both_caught() -> None:
    # The executor as it was: no claims/ PUT, and a whole-table CRUD template on the runs table
    executor = {
        "Properties": {
            "Policies": [
                {"DynamoDBCrudPolicy": {"TableName": {"Ref": "RunsTable"}}},
                {
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "s3:PutObject",
                            "Resource": {"Fn::Sub": "${ScriptsBucket.Arn}/reports/*"},
                        }
                    ]
                },
            ]
        }
    }
    grants = granted(executor)
    assert "PutObject" not in grants.get("ScriptsBucket/claims/*", set())
    assert {"Scan", "DescribeTable"} <= grants["RunsTable"]
    assert "Query" in grants["RunsTable/index/*"]
