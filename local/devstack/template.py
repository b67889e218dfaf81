"""Reads template.yaml: the resources the local stack creates, each function's environment and
the HTTP routes, so that the local stack cannot drift from what `sam deploy` builds."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


NO_VALUE: Any = object()  # Ref AWS::NoValue: the property or list item is left out


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form intrinsics (!Ref, !Sub, !GetAtt ...)."""


def _intrinsic(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open() as handle:
        document: dict[str, Any] = yaml.load(handle, Loader=_CfnLoader)  # noqa: S506
    return document


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # API Gateway form: /jobs/{job_id}
    function: str  # logical id
    authorized: bool

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path)
        found = re.fullmatch(pattern, path)
        return found.groupdict() if found else None


@dataclass
class Stack:
    """The template, resolved against local physical names and parameter values."""

    document: dict[str, Any]
    physical_names: dict[str, str]
    parameters: dict[str, str]
    secrets: dict[str, str] = field(default_factory=dict)
    # Local-only environment per function, on top of the template's (e.g. the local backend).
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.document["Resources"]
        return resources

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: res for name, res in self.resources.items() if res["Type"] == kind}

    def resolve(self, value: Any) -> Any:
        """Evaluate the intrinsics the local stack needs: Ref, Sub, GetAtt (Arn), Join."""
        if isinstance(value, dict) and len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::GetAtt":
                return self._get_att(arg[0], arg[1])
            if key == "Fn::Join":
                parts = self.resolve(arg[1])
                return str(arg[0]).join(
                    str(v) for v in (parts if isinstance(parts, list) else [parts])
                )
            if key == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
        if isinstance(value, dict):
            resolved = {k: self.resolve(v) for k, v in value.items()}
            return {k: v for k, v in resolved.items() if v is not NO_VALUE}
        if isinstance(value, list):
            return [item for item in (self.resolve(v) for v in value) if item is not NO_VALUE]
        return value

    def condition(self, name: str) -> bool:
        """A condition of the template, evaluated against the parameters."""
        return self._evaluate(self.document.get("Conditions", {})[name])

    def _evaluate(self, expression: Any) -> bool:
        ((function, arguments),) = expression.items()
        if function == "Condition":
            return self.condition(arguments)
        if function == "Fn::Equals":
            left, right = (self.resolve(argument) for argument in arguments)
            return str(left) == str(right)
        if function == "Fn::Not":
            return not self._evaluate(arguments[0])
        if function == "Fn::And":
            return all(self._evaluate(argument) for argument in arguments)
        if function == "Fn::Or":
            return any(self._evaluate(argument) for argument in arguments)
        raise KeyError(f"condition function {function} has no local evaluation")

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        if name in self.physical_names:
            if self.resources[name]["Type"] == "AWS::SNS::Topic":  # Ref of a topic is its ARN
                return f"arn:aws:sns:us-east-1:123456789012:{self.physical_names[name]}"
            if self.resources[name]["Type"] == "AWS::SQS::Queue":  # Ref of a queue is its URL
                return (
                    f"https://sqs.us-east-1.amazonaws.com/123456789012/{self.physical_names[name]}"
                )
            return self.physical_names[name]
        pseudo = {
            "AWS::Region": "us-east-1",
            "AWS::AccountId": "123456789012",
            "AWS::Partition": "aws",
        }
        if name in pseudo:
            return pseudo[name]
        raise KeyError(f"template reference {name!r} has no local value")

    def _logical(self, physical: str) -> str:
        return next(name for name, value in self.physical_names.items() if value == physical)

    def _get_att(self, name: str, attribute: str) -> str:
        resource = self.resources[name]
        physical = self.physical_names[name]
        if resource["Type"] == "AWS::SQS::Queue" and attribute == "Arn":
            return f"arn:aws:sqs:us-east-1:123456789012:{physical}"
        if resource["Type"] == "AWS::SQS::Queue" and attribute == "QueueName":
            return physical
        if resource["Type"] == "AWS::SNS::Topic" and attribute == "TopicName":
            return physical
        if resource["Type"] == "AWS::ECS::Cluster" and attribute == "Arn":
            return f"arn:aws:ecs:us-east-1:123456789012:cluster/{physical}"
        if resource["Type"] == "AWS::S3::Bucket" and attribute == "Arn":
            return f"arn:aws:s3:::{physical}"
        if resource["Type"] == "AWS::DynamoDB::Table" and attribute == "Arn":
            return f"arn:aws:dynamodb:us-east-1:123456789012:table/{physical}"
        if attribute == "Arn":
            return f"arn:aws:local:::{physical}"
        raise KeyError(f"GetAtt {name}.{attribute} has no local value")

    def _sub(self, arg: Any) -> str:
        text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

        def replace(found: re.Match[str]) -> str:
            name = found.group(1)
            if name in extra:
                return str(self.resolve(extra[name]))
            if "." in name and not name.startswith("AWS::"):
                resource, attribute = name.split(".", 1)
                return self._get_att(resource, attribute)
            return str(self._ref(name))

        resolved = re.sub(r"\$\{([^}]+)\}", replace, text)
        # Secrets Manager dynamic references resolve to the local stack's own secrets.
        return re.sub(
            r"\{\{resolve:secretsmanager:([^}:]+)[^}]*\}\}",
            lambda m: self.secrets[self._logical(m.group(1))],
            resolved,
        )

    # -- functions ----------------------------------------------------------------------------

    @property
    def functions(self) -> dict[str, dict[str, Any]]:
        return self.of_type("AWS::Serverless::Function")

    def code_dir(self, function: str) -> Path:
        return ROOT / str(self.functions[function]["Properties"]["CodeUri"])

    def handler(self, function: str) -> tuple[str, str]:
        module, _, name = self.functions[function]["Properties"]["Handler"].rpartition(".")
        return module, name

    def environment(self, function: str, *, local: bool = True) -> dict[str, str]:
        """The function's environment as Lambda would set it: Globals merged with its own, then
        (unless not `local`) what the local stack changes in it."""
        merged: dict[str, Any] = {}
        globals_env = self.document.get("Globals", {}).get("Function", {}).get("Environment", {})
        merged.update(globals_env.get("Variables", {}))
        own = self.functions[function]["Properties"].get("Environment", {})
        merged.update(own.get("Variables", {}))
        resolved = {key: str(value) for key, value in self.resolve(merged).items()}
        return resolved | (self.overrides.get(function, {}) if local else {})

    def routes(self) -> list[Route]:
        found = []
        for name, function in self.functions.items():
            for event in function["Properties"].get("Events", {}).values():
                if event["Type"] != "HttpApi":
                    continue
                props = event["Properties"]
                auth = props.get("Auth", {}).get("Authorizer")
                found.append(Route(props["Method"].upper(), props["Path"], name, auth != "NONE"))
        return found

    def events_of(self, kind: str) -> dict[str, dict[str, Any]]:
        """Functions with an event of `kind` (Schedule, SQS ...): {function: event properties}."""
        found = {}
        for name, function in self.functions.items():
            for event in function["Properties"].get("Events", {}).values():
                if event["Type"] == kind:
                    found[name] = self.resolve(event["Properties"])
        return found


def local_stack(
    prefix: str, parameters: dict[str, str], secrets: dict[str, str] | None = None
) -> Stack:
    """The template with physical names `<prefix>-<LogicalId>` (lower-case for buckets)."""
    document = load()
    names: dict[str, str] = {}
    for logical, resource in document["Resources"].items():
        physical = f"{prefix}-{logical}"
        if resource["Type"] == "AWS::S3::Bucket":
            physical = physical.lower()
        if resource["Type"] == "AWS::SQS::Queue" and resource.get("Properties", {}).get(
            "FifoQueue"
        ):
            physical += ".fifo"
        names[logical] = physical
    defaults = {
        name: str(spec["Default"])
        for name, spec in document.get("Parameters", {}).items()
        if "Default" in spec
    }
    return Stack(document, names, defaults | parameters, secrets or {})
