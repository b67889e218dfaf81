"""Regenerate the CLI's models from the API's OpenAPI document (a development tool, not shipped).

    python cli/generate_models.py                  # from the document the API functions serve
    python cli/generate_models.py --url URL        # from a running API's GET /openapi.json
    python cli/generate_models.py --check          # exit 1, with a diff, if either file drifted

Writes cli/openapi.json (the document, as served, indented) and
cli/src/scheduler_cli/api_models.py (pydantic models generated from it by
datamodel-code-generator). Without --url the document comes from the docs function itself,
resolved in-process (GET /openapi.json through `scheduler.api.docs`): that needs the server's
layer on PYTHONPATH, as `make cli-models` sets it. The CLI never imports the server; it imports
only the generated module.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

CLI = Path(__file__).resolve().parent
DOCUMENT = CLI / "openapi.json"
MODELS = CLI / "src" / "scheduler_cli" / "api_models.py"
HEADER = (
    "Generated from the API's OpenAPI document (cli/openapi.json) by datamodel-code-generator:\n"
    "do not edit. Regenerate with `make cli-models`; a test fails when this file drifts."
)
CODEGEN_OPTIONS = (
    "--input-file-type=openapi",
    "--output-model-type=pydantic_v2.BaseModel",
    "--target-python-version=3.11",
    "--use-annotated",
    "--field-constraints",
    "--use-standard-collections",
    "--use-union-operator",
    "--use-schema-description",
    "--use-field-description",
    "--use-double-quotes",
    "--collapse-root-models",
    "--use-subclass-enum",
    "--deserialize-default-values",
    "enum",
    "--disable-timestamp",
    "--formatters",
    "ruff-format",
    "--custom-file-header",
    f'"""{HEADER}"""',
)


def served_document() -> dict[str, Any]:
    """GET /openapi.json answered by the docs function's resolver, in-process."""
    from scheduler.api import docs  # the server's layer: this tool's need, never the CLI's

    event = {
        "version": "2.0",
        "routeKey": "GET /openapi.json",
        "rawPath": "/openapi.json",
        "rawQueryString": "",
        "headers": {},
        "requestContext": {
            "http": {"method": "GET", "path": "/openapi.json", "sourceIp": "127.0.0.1"},
            "routeKey": "GET /openapi.json",
            "stage": "$default",
        },
        "isBase64Encoded": False,
    }
    answer = docs.make_docs_resolver().resolve(event, None)  # type: ignore[arg-type]
    if answer["statusCode"] != 200:
        raise SystemExit(f"the docs function answered {answer['statusCode']}: {answer['body']}")
    document: dict[str, Any] = json.loads(answer["body"])
    return document


def fetched_document(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (a URL we are given)
        document: dict[str, Any] = json.loads(response.read())
    return document


def document_text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def models_text(document: str) -> str:
    """What datamodel-code-generator makes of the document."""
    with tempfile.TemporaryDirectory() as scratch:
        source, target = Path(scratch) / "openapi.json", Path(scratch) / "api_models.py"
        source.write_text(document)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "datamodel_code_generator",
                "--input",
                str(source),
                "--output",
                str(target),
                *CODEGEN_OPTIONS,
            ],
            check=True,
            # the formatter is the environment's ruff (pinned in requirements-dev.txt)
            env=os.environ
            | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
        )
        return target.read_text()


def drift(path: Path, wanted: str) -> str:
    """A unified diff from the file to what it should hold; empty when they agree."""
    present = path.read_text() if path.exists() else ""
    return "".join(
        difflib.unified_diff(
            present.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            f"{path.relative_to(CLI.parent)} (committed)",
            f"{path.relative_to(CLI.parent)} (generated)",
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running API's /openapi.json (default: in-process)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 on drift")
    args = parser.parse_args(argv)

    document = document_text(fetched_document(args.url) if args.url else served_document())
    models = models_text(document)
    if args.check:
        found = drift(DOCUMENT, document) + drift(MODELS, models)
        if found:
            sys.stdout.write(found)
            print("the CLI's models drifted from the API: run `make cli-models`", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.write_text(document)
    MODELS.write_text(models)
    print(f"wrote {DOCUMENT.relative_to(CLI.parent)} and {MODELS.relative_to(CLI.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
