"""The optional isolated runner network (template.yaml, RunnerNetwork=isolated): untrusted
scripts get a VPC whose only routes are the VPC's own and the S3 gateway endpoint's, the
endpoint lets through only this bucket's presigned requests (and ECR's layers), and the executor
starts tasks there. Read from the template as CloudFormation would resolve it."""

from __future__ import annotations

from typing import Any

from devstack.template import local_stack

PARAMETERS = {"JwtIssuer": "https://issuer.test", "JwtAudience": "scheduler"}
ISOLATED = PARAMETERS | {"RunnerNetwork": "isolated", "RunnerAssignPublicIp": "ENABLED"}
NETWORK_TYPES = {
    "AWS::EC2::VPC",
    "AWS::EC2::Subnet",
    "AWS::EC2::RouteTable",
    "AWS::EC2::SubnetRouteTableAssociation",
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::VPCEndpoint",
}


def _network(stack: Any) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in stack.document["Resources"].items()
        if resource["Type"].startswith("AWS::EC2::")
    }


def test_the_executor_starts_tasks_in_the_isolated_network_without_public_ips() -> None:
    stack = local_stack("t", ISOLATED)
    env = stack.environment("ExecutorFunction")
    assert env["SUBNETS"] == "t-RunnerSubnetA,t-RunnerSubnetB"
    assert env["SECURITY_GROUPS"] == "t-RunnerTaskSecurityGroup"
    assert env["ASSIGN_PUBLIC_IP"] == "false"  # even when asked: there is nothing to reach

    provided = local_stack("t", PARAMETERS | {"RunnerSubnets": "subnet-1,subnet-2"})
    assert provided.environment("ExecutorFunction")["SUBNETS"] == "subnet-1,subnet-2"


def test_the_network_exists_only_when_asked_for_and_has_no_way_out() -> None:
    stack = local_stack("t", ISOLATED)
    network = _network(stack)
    assert {resource["Type"] for resource in network.values()} == NETWORK_TYPES
    assert all(r.get("Condition") == "IsolatedRunnerNetwork" for r in network.values())
    assert stack.condition("IsolatedRunnerNetwork") is True
    assert local_stack("t", PARAMETERS).condition("IsolatedRunnerNetwork") is False
    # No internet or NAT gateway, no route, peering or transit gateway attachment of any kind:
    # the route table holds only the VPC's local route and the S3 endpoint's.
    assert not any(t.rsplit("::", 1)[1] == "Route" for t in (r["Type"] for r in network.values()))
    subnets = [r for r in network.values() if r["Type"] == "AWS::EC2::Subnet"]
    assert all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in subnets)


def test_the_s3_endpoint_allows_only_this_buckets_presigned_requests() -> None:
    stack = local_stack("t", ISOLATED)
    endpoint = stack.document["Resources"]["RunnerS3Endpoint"]["Properties"]
    assert endpoint["VpcEndpointType"] == "Gateway"
    bucket, layers = endpoint["PolicyDocument"]["Statement"]
    resource = stack.resolve(bucket["Resource"])
    assert resource.endswith(f"{stack.physical_names['ScriptsBucket']}/*")
    assert set(bucket["Action"]) == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    # signed by the executor's role: the manifests' presigned URLs, nobody else's requests
    assert bucket["Condition"]["ArnEquals"] == {
        "aws:PrincipalArn": {"Fn::GetAtt": ["ExecutorFunctionRole", "Arn"]}
    }
    assert layers["Action"] == "s3:GetObject"
    assert "-starport-layer-bucket/*" in layers["Resource"]["Fn::Sub"]  # ECR's image layers
    task_group = stack.document["Resources"]["RunnerTaskSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in task_group
    assert [(r["FromPort"], r["ToPort"]) for r in task_group["SecurityGroupEgress"]] == [(443, 443)]
