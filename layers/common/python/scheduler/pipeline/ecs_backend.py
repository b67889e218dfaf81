"""The Fargate dispatch backend: one RunTask per pack, the manifest URL in the container overrides
and the pack's run references and place item beside it, for the task-stopped event."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from scheduler import keys
from scheduler.aws.client_errors import THROTTLING_CODES, error_code
from scheduler.pipeline.dispatch_models import RunSpec
from scheduler.pipeline.manifests import Manifests
from scheduler.pipeline.ports import DispatchFailed, DispatchThrottled

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_ecs.type_defs import KeyValuePairTypeDef


def run_refs(runs: list[RunSpec]) -> str:
    """Compact list of the task's runs, carried in its overrides for the task-stopped event."""
    return keys.format_run_refs([(r.job_id, r.run_key, r.attempt) for r in runs])


class EcsBackend:
    """Fargate RunTask: one task per pack, the manifest URL in the container overrides."""

    def __init__(
        self,
        ecs: ECSClient,
        manifests: Manifests,
        *,
        cluster: str,
        task_definition: str,
        container: str,
        subnets: list[str],
        security_groups: list[str],
        assign_public_ip: bool,
    ) -> None:
        self._ecs = ecs
        self._manifests = manifests
        self._cluster = cluster
        self._task_definition = task_definition
        self._container = container
        self._network = {
            "awsvpcConfiguration": {
                "subnets": subnets,
                "securityGroups": security_groups,
                "assignPublicIp": "ENABLED" if assign_public_ip else "DISABLED",
            }
        }

    def dispatch(self, pack_id: str, runs: list[RunSpec], place: str | None = None) -> str:
        url = self._manifests.publish(pack_id, runs)
        try:
            response = self._run_task(url, runs, pack_id, place)
        except ClientError as exc:
            if error_code(exc) in THROTTLING_CODES:
                raise DispatchThrottled(f"RunTask throttled: {error_code(exc)}") from exc
            raise
        failures = response.get("failures", [])
        tasks = response.get("tasks", [])
        if failures or not tasks:
            raise DispatchFailed(f"RunTask failed: {failures}")
        return str(tasks[0]["taskArn"])

    def _run_task(self, url: str, runs: list[RunSpec], pack_id: str, place: str | None) -> Any:
        environment: list[KeyValuePairTypeDef] = [
            {"name": "RUNS_MANIFEST_URL", "value": url},
            {"name": "RUN_REFS", "value": run_refs(runs)},
        ]
        if place is not None:  # read back from the task-stopped event, not by the runner
            environment.append({"name": "PLACE", "value": place})
        return self._ecs.run_task(
            cluster=self._cluster,
            taskDefinition=self._task_definition,
            launchType="FARGATE",
            count=1,
            startedBy=pack_id[:36],
            networkConfiguration=self._network,  # type: ignore[arg-type]
            overrides={
                "containerOverrides": [
                    {
                        "name": self._container,
                        "environment": environment,
                    }
                ]
            },
        )
