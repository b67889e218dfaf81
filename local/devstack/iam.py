"""IAM enforced in the local stack: every function calls moto with the credentials of a role
that has only that function's policies from template.yaml, and moto checks them.

- The policies come from the SAM-transformed template (`devstack.transform`): each function's
  role resource, with its SAM policy templates expanded and its inline statements, resolved
  against the local names. They are put in moto as written, except where moto cannot evaluate
  them (`for_moto`, docs/local-stack.md "IAM"): moto passes `*` as the resource of every
  DynamoDB, SNS, Secrets Manager and ECS call, so those statements are checked by action only;
  S3 (bucket and object key) and SQS (queue) statements keep their resources; conditions are
  dropped (moto knows none of the request's condition keys); a transaction is an action of its
  own to moto (`dynamodb:TransactWriteItems`), granted where one of the writes it stands for is.
- The stack's own setup (tables, queues, bucket, the pollers standing for event source
  mappings, the local task backends standing for ECS) runs as an admin user.
- moto server enforces IAM from the moment `enforce()` sets its count of unauthenticated
  requests to 0 (`/moto-api/reset-auth`); before, it creates the admin user and the roles.
- Which principal signs a request is decided when it is signed: `CURRENT_FUNCTION`, set by
  `Functions.invoke` for the invocation (and copied into the threads it fans out to),
  chooses the function's role; outside an invocation, the admin.
"""

from __future__ import annotations

import contextvars
import json
import os
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from botocore.credentials import CredentialProvider, Credentials, ReadOnlyCredentials
from botocore.exceptions import ClientError

from devstack.template import Stack
from devstack.transform import transformed

ADMIN_USER = "devstack-admin"
CREDENTIALS_FILE = "aws-credentials.json"
ACCOUNT = "123456789012"
# The function whose role signs this thread's (or context's) AWS calls; None: the admin.
CURRENT_FUNCTION: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "devstack_current_function", default=None
)
# Services whose calls moto authorises against the resource they name (S3: the bucket or the
# object; SQS: the queue); every other service's calls are checked with the resource `*`.
RESOURCE_CHECKED = {"s3", "sqs", "sts", "iam"}
# What moto asks for a DynamoDB transaction, and which grants stand for it on AWS (a
# transaction needs the item action of each of its writes, on each item's table).
_TRANSACTION = "dynamodb:TransactWriteItems"
_TRANSACTION_WRITES = {
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:ConditionCheckItem",
}


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def environment(self) -> dict[str, str]:
        """As AWS_* variables (an IAM user's keys have no session token)."""
        found = {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }
        if self.session_token:
            found["AWS_SESSION_TOKEN"] = self.session_token
        return found

    def frozen(self) -> ReadOnlyCredentials:
        return ReadOnlyCredentials(self.access_key_id, self.secret_access_key, self.session_token)


@dataclass(frozen=True)
class Principals:
    admin: Keys
    functions: dict[str, Keys]  # logical id of the function -> its role's session

    def for_current(self) -> Keys:
        function = CURRENT_FUNCTION.get()
        return self.admin if function is None else self.functions[function]

    def save(self, state_dir: Path) -> Path:
        """`<state dir>/aws-credentials.json` (0600): for tests and sam local."""
        path = state_dir / CREDENTIALS_FILE
        document = {
            "admin": self.admin.__dict__,
            "functions": {name: keys.__dict__ for name, keys in self.functions.items()},
        }
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")
        return path


def load_credentials(state_dir: Path) -> Principals | None:
    """What a running stack saved (None when IAM is not enforced)."""
    path = state_dir / CREDENTIALS_FILE
    if not path.exists():
        return None
    document = json.loads(path.read_text())
    functions = {name: Keys(**keys) for name, keys in document["functions"].items()}
    return Principals(Keys(**document["admin"]), functions)


# -- the policies -------------------------------------------------------------------------------


def function_policies(stack: Stack) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Each function's inline policies from the transformed template, {function: [(name,
    document)]}, intrinsics still unresolved. Managed policies (logs, X-Ray, the SQS poller's)
    are left out: the local stack calls none of those services from a function."""
    document = transformed(dict(stack.parameters))
    resources = document["Resources"]
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name in stack.functions:
        role = resources[name]["Properties"]["Role"]["Fn::GetAtt"][0]
        policies = resources[role]["Properties"].get("Policies", [])
        found[name] = [(p["PolicyName"], p["PolicyDocument"]) for p in policies]
    return found


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def for_moto(
    document: dict[str, Any], stack: Stack, revoked: Iterable[str] = ()
) -> dict[str, Any] | None:
    """A policy document of the template resolved and shaped for moto's evaluation (see the
    module's docstring); `revoked` actions are taken out. None when nothing is left."""
    revoked = set(revoked)
    statements: list[dict[str, Any]] = []
    for statement in _listed(stack.resolve(document)["Statement"]):
        actions = [a for a in _listed(statement["Action"]) if a not in revoked]
        by_resource = [a for a in actions if a.split(":")[0] in RESOURCE_CHECKED]
        by_action = [a for a in actions if a.split(":")[0] not in RESOURCE_CHECKED]
        if _TRANSACTION_WRITES & set(by_action):
            by_action.append(_TRANSACTION)
        effect = statement["Effect"]
        if by_resource:
            resource = statement["Resource"]
            statements.append({"Effect": effect, "Action": by_resource, "Resource": resource})
        if by_action:
            statements.append({"Effect": effect, "Action": by_action, "Resource": "*"})
    if not statements:
        return None
    return {"Version": "2012-10-17", "Statement": statements}


# -- enforcement in moto ------------------------------------------------------------------------


def _reset_auth(endpoint: str, count: str) -> None:
    """moto's count of requests served before it enforces IAM ("inf": never, "0": at once)."""
    request = urllib.request.Request(  # noqa: S310  # the local moto server
        f"{endpoint}/moto-api/reset-auth",
        data=count.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310
        pass


def _admin(iam: Any) -> tuple[Keys, str]:
    try:
        user = iam.create_user(UserName=ADMIN_USER)["User"]
    except iam.exceptions.EntityAlreadyExistsException:
        user = iam.get_user(UserName=ADMIN_USER)["User"]
    everything = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    iam.put_user_policy(
        UserName=ADMIN_USER, PolicyName="everything", PolicyDocument=json.dumps(everything)
    )
    for old in iam.list_access_keys(UserName=ADMIN_USER)["AccessKeyMetadata"]:
        iam.delete_access_key(UserName=ADMIN_USER, AccessKeyId=old["AccessKeyId"])
    key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
    return Keys(key["AccessKeyId"], key["SecretAccessKey"]), str(user["Arn"])


def _role(iam: Any, name: str, trust: dict[str, Any], policies: Mapping[str, Any]) -> str:
    """The role `name` with exactly these inline policies (an existing one is brought in line:
    a restarted stack attached to the same moto)."""
    try:
        role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    except iam.exceptions.EntityAlreadyExistsException:
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
        role = iam.get_role(RoleName=name)["Role"]
        for old in iam.list_role_policies(RoleName=name)["PolicyNames"]:
            iam.delete_role_policy(RoleName=name, PolicyName=old)
    for policy_name, document in policies.items():
        iam.put_role_policy(
            RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(document)
        )
    return str(role["Arn"])


def enforce(
    stack: Stack, endpoint: str, revoke: Mapping[str, Iterable[str]] | None = None
) -> Principals:
    """Create the admin user and a role per function in moto, then make moto enforce IAM and
    assume each role. `revoke`: {function: actions taken out of its policies} (to show that a
    missing grant fails; `--iam-revoke`)."""
    revoke = revoke or {}
    unknown = set(revoke) - set(stack.functions)
    if unknown:
        raise ValueError(f"--iam-revoke names no function of the template: {sorted(unknown)}")
    _reset_auth(endpoint, "inf")  # a moto already enforcing (a restarted stack attached to it)
    setup = boto3.session.Session(
        # moto checks nothing yet: any keys will do
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",  # noqa: S106
        region_name="us-east-1",
    )
    iam = setup.client("iam", endpoint_url=endpoint)
    admin, admin_arn = _admin(iam)
    # The roles trust the admin, who stands for the Lambda service assuming them.
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": admin_arn}, "Action": "sts:AssumeRole"}
        ],
    }
    roles = {}
    for function, policies in function_policies(stack).items():
        shaped = {
            name: document
            for name, raw in policies
            if (document := for_moto(raw, stack, revoke.get(function, ()))) is not None
        }
        roles[function] = _role(iam, f"{stack.physical_names[function]}Role", trust, shaped)
    _reset_auth(endpoint, "0")
    sts = boto3.session.Session(
        aws_access_key_id=admin.access_key_id,
        aws_secret_access_key=admin.secret_access_key,
        region_name="us-east-1",
    ).client("sts", endpoint_url=endpoint)
    functions = {}
    for function, arn in roles.items():
        try:
            session = sts.assume_role(RoleArn=arn, RoleSessionName=function[:64])["Credentials"]
        except ClientError as error:
            raise RuntimeError(f"cannot assume {arn} in moto: {error}") from error
        functions[function] = Keys(
            session["AccessKeyId"], session["SecretAccessKey"], session["SessionToken"]
        )
    return Principals(admin, functions)


# -- signing each call as its function ----------------------------------------------------------


class FunctionCredentials(Credentials):
    """Credentials chosen per call: the current function's role session, else the admin's."""

    def __init__(self, principals: Principals) -> None:  # no super(): the keys are dynamic
        self._principals = principals
        self.method = "devstack-function-role"
        self.account_id = None

    @property
    def access_key(self) -> str:  # type: ignore[override]
        return self._principals.for_current().access_key_id

    @property
    def secret_key(self) -> str:  # type: ignore[override]
        return self._principals.for_current().secret_access_key

    @property
    def token(self) -> str | None:  # type: ignore[override]
        return self._principals.for_current().session_token

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        return self._principals.for_current().frozen()


class _FunctionRoles(CredentialProvider):  # type: ignore[misc]
    METHOD = "devstack-function-role"
    CANONICAL_NAME = "customDevstackFunctionRole"

    def __init__(self, principals: Principals) -> None:
        super().__init__()
        self._principals = principals

    def load(self) -> Credentials:
        return FunctionCredentials(self._principals)


def install(principals: Principals) -> None:
    """The admin's keys in this process's environment (every new boto3 Session: the stack's
    setup, the local task backends); boto3's default session, which the functions' clients
    come from (`wiring.client`), signs as the current function."""
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.update(principals.admin.environment())
    session = botocore.session.get_session()
    session.get_component("credential_provider").insert_before("env", _FunctionRoles(principals))
    boto3.setup_default_session(botocore_session=session)
