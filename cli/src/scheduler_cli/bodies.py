"""Request bodies from the command line and job files, checked against the API's models
before they are sent (a bad field is a usage error, exit 2, with no request made)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from scheduler_cli.exit_codes import CliError, ExitCode

M = TypeVar("M", bound=BaseModel)


def read_text(path: str, what: str) -> str:
    """A file's text, or stdin's for `-`."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).expanduser().read_text()
    except OSError as exc:
        raise CliError(f"cannot read the {what} {path}: {exc}", ExitCode.USAGE) from None


def read_mapping(path: str, what: str) -> dict[str, Any]:
    """A YAML or JSON file holding an object (JSON is YAML)."""
    try:
        data = yaml.safe_load(read_text(path, what))
    except yaml.YAMLError as exc:
        raise CliError(f"the {what} {path} is not YAML or JSON: {exc}", ExitCode.USAGE) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CliError(f"the {what} {path} must hold an object (key: value)", ExitCode.USAGE)
    return data


def parse_param(pair: str) -> tuple[str, Any]:
    """`k=v`: v as JSON when it parses as JSON (5, true, null, "5", [1], {"a": 1}), else the
    string as written."""
    key, sep, value = pair.partition("=")
    if not sep or not key:
        raise CliError(f"--param takes KEY=VALUE, not {pair!r}", ExitCode.USAGE)
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def parameters(params_file: str | None, pairs: tuple[str, ...]) -> dict[str, Any] | None:
    """The parameters a command was given: the file's object, then each --param on top; None
    when neither was given."""
    if params_file is None and not pairs:
        return None
    found = read_mapping(params_file, "parameters file") if params_file else {}
    found.update(parse_param(pair) for pair in pairs)
    return found


def job_file(path: str) -> dict[str, Any]:
    """A job file: the fields of a create (or update) body; `script_file` (a path relative to
    the job file) may stand for `script`."""
    data = read_mapping(path, "job file")
    script_file = data.pop("script_file", None)
    if script_file is not None:
        if "script" in data:
            raise CliError(f"{path}: give `script` or `script_file`, not both", ExitCode.USAGE)
        base = Path(path).parent if path != "-" else Path.cwd()
        data["script"] = read_text(str(base / str(script_file)), "script")
    return data


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` on top; nested objects merged key by key."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def checked(model: type[M], body: dict[str, Any], what: str) -> dict[str, Any]:
    """The body as the model accepts it, with only the fields that were given."""
    try:
        valid = model.model_validate(body)
    except ValidationError as exc:
        problems = [
            f"  {'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors()
        ]
        raise CliError(f"invalid {what}:\n" + "\n".join(problems), ExitCode.USAGE) from None
    dumped: dict[str, Any] = valid.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return dumped
