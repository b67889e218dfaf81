"""The docker backend's container takes its shape from the task definition that the local stack
registers from template.yaml, read back with DescribeTaskDefinition as Fargate reads it (against
moto: no Docker needed here; tests/e2e runs the containers)."""

from __future__ import annotations

import boto3

from devstack.docker_backend import ContainerSpec
from devstack.template import Stack


def test_the_container_is_shaped_like_the_registered_task_definition(stack: Stack) -> None:
    family = stack.resolve({"Ref": "RunnerTaskDefinition"})
    definition = boto3.client("ecs").describe_task_definition(taskDefinition=family)
    spec = ContainerSpec.from_task_definition(definition["taskDefinition"])

    assert spec.image == stack.parameters["RunnerImageUri"]
    assert (spec.cpu_units, spec.memory_mib) == (512, 1024)  # RunnerCpu, RunnerMemory
    assert spec.read_only is True
    assert spec.scratch == ("/tmp",)  # the task's ephemeral volume
    assert spec.stop_timeout == 30
    # The task's memory, for the runner to share out among its runs; no secret, no URL (the
    # overrides carry the manifest's).
    assert spec.environment == {"RUNNER_TASK_MEMORY_MB": "1024"}

    options = spec.run_options()
    assert "--network=host" in options
    assert "--cpus=0.5" in options
    assert "--memory=1024m" in options
    assert "--memory-swap=1024m" in options  # no swap, as on Fargate
    assert "--read-only" in options
    assert "--stop-timeout=30" in options
    (tmpfs,) = [option for option in options if option.startswith("--tmpfs=")]
    assert tmpfs.startswith("--tmpfs=/tmp:rw,"), tmpfs
