"""Loads a function's handler the way Lambda does (its CodeUri on the path, `Handler` resolved)
and gives it a Lambda context object."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from devstack.template import Stack

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LambdaContext:
    function_name: str
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"
    timeout_seconds: float = 10.0

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return int(self.timeout_seconds * 1000)


def load_handler(stack: Stack, function: str) -> Handler:
    """Import `functions/<name>/app.py` under a unique module name and return its handler."""
    module_name, attribute = stack.handler(function)
    path = stack.code_dir(function) / f"{module_name.replace('.', '/')}.py"
    unique = f"lambda_{function}"
    spec = importlib.util.spec_from_file_location(unique, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    handler: Handler = getattr(module, attribute)
    return handler


def context_for(stack: Stack, function: str) -> LambdaContext:
    properties = stack.functions[function]["Properties"]
    globals_ = stack.document.get("Globals", {}).get("Function", {})
    timeout = properties.get("Timeout", globals_.get("Timeout", 3))
    memory = properties.get("MemorySize", globals_.get("MemorySize", 128))
    return LambdaContext(
        function_name=stack.physical_names[function],
        memory_limit_in_mb=int(memory),
        timeout_seconds=float(timeout),
    )
