"""The local stack's reading of template.yaml's conditions (devstack/template.py): `Fn::If` takes
the branch its condition gives, and `AWS::NoValue` leaves the property out, as CloudFormation."""

from __future__ import annotations

from devstack.template import local_stack

PARAMETERS = {"JwtIssuer": "https://issuer.test", "JwtAudience": "scheduler"}


def test_the_endpoint_variable_is_absent_unless_a_local_endpoint_is_given() -> None:
    deployed = local_stack("t", PARAMETERS)
    assert "AWS_ENDPOINT_URL" not in deployed.environment("GetJobFunction")

    for_sam = local_stack("t", PARAMETERS | {"LocalAwsEndpoint": "http://172.17.0.1:4566"})
    assert for_sam.environment("GetJobFunction")["AWS_ENDPOINT_URL"] == "http://172.17.0.1:4566"


def test_conditions_pick_their_branch() -> None:
    private = local_stack("t", PARAMETERS).environment("ExecutorFunction")
    public = local_stack("t", PARAMETERS | {"RunnerAssignPublicIp": "ENABLED"})
    assert private["ASSIGN_PUBLIC_IP"] == "false"
    assert public.environment("ExecutorFunction")["ASSIGN_PUBLIC_IP"] == "true"

    stack = local_stack("t", PARAMETERS)
    assert stack.condition("IsArm64") is True
    assert local_stack("t", PARAMETERS | {"Architecture": "x86_64"}).condition("IsArm64") is False
    alarm = next(iter(stack.of_type("AWS::CloudWatch::Alarm").values()))
    assert "AlarmActions" not in stack.resolve(alarm["Properties"])  # no AlarmTopicArn
