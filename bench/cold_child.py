"""One cold start, in a fresh interpreter (run by bench/cold_start.py, not imported):

    python bench/cold_child.py CODE_DIR MODULE ATTRIBUTE EVENT_JSON_FILE

Imports the handler the way Lambda does (its code directory and the layer on sys.path, the
module loaded by file), invokes it once (the first invocation also builds clients and reads
settings) and once more (warm), and prints one JSON line of timings. The function's environment
(and moto's endpoint) come from the parent.
"""

import time

_started = time.perf_counter()

import importlib.util  # noqa: E402  # timing starts before any import
import json  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402


@dataclass
class Context:
    function_name: str = "cold-start"
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:cold-start"
    log_group_name: str = "/aws/lambda/cold-start"
    log_stream_name: str = "cold-start"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def main() -> None:
    code_dir, module_name, attribute, event_file = sys.argv[1:5]
    sys.path.insert(0, code_dir)
    baseline = time.perf_counter()
    spec = importlib.util.spec_from_file_location(module_name, f"{code_dir}/{module_name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = getattr(module, attribute)
    imported = time.perf_counter()
    with open(event_file) as handle:
        event = json.load(handle)
    first = handler(json.loads(json.dumps(event)), Context())
    invoked = time.perf_counter()
    handler(json.loads(json.dumps(event)), Context())
    again = time.perf_counter()
    status = first.get("statusCode") if isinstance(first, dict) else None
    result = {
        "interpreter_to_main_ms": (baseline - _started) * 1000,
        "import_ms": (imported - baseline) * 1000,
        "first_invocation_ms": (invoked - imported) * 1000,
        "second_invocation_ms": (again - invoked) * 1000,
        "status": status,
        "modules_loaded": len(sys.modules),
    }
    sys.stdout = sys.__stdout__
    print("COLD-START " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
