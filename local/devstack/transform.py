"""template.yaml through the SAM transform, offline: the CloudFormation template that `sam deploy`
would hand to CloudFormation (what checkov scans; `make checkov`).

samtranslator (installed with the SAM CLI) transforms the template locally; it calls IAM only to
resolve managed policy *names*, which the template does not use (only ARNs and statements), so
the loader here knows none and the transform needs no credentials or network. Resource
`Metadata` (checkov's skip comments) is passed through to the resources SAM generates.

    python -m devstack.transform OUT.json [Name=Value ...]   (parameter values)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


class NoManagedPolicies:
    """The managed policy loader: the template names no managed policy, so nothing to look up."""

    def load(self) -> dict[str, str]:
        return {}


def transformed(parameters: dict[str, str] | None = None) -> dict[str, Any]:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # the pseudo parameter's value
    document = yaml_parse(TEMPLATE.read_text())
    # As `sam package` would: local code folders become S3 locations (placeholders here).
    for resource in document["Resources"].values():
        properties = resource.get("Properties", {})
        for uri in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(uri), str) and not properties[uri].startswith("s3://"):
                properties[uri] = f"s3://packaged-code/{properties[uri].strip('/')}"
    result: dict[str, Any] = transform(
        document,
        parameters or {},
        NoManagedPolicies(),  # type: ignore[arg-type]
        passthrough_metadata=True,
    )
    return result


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    parameters = dict(item.split("=", 1) for item in argv[1:])
    Path(argv[0]).write_text(json.dumps(transformed(parameters), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
