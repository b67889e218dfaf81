"""The exit codes scripts can rely on (docs/cli.md#exit-codes), and the error that carries one."""

from __future__ import annotations

import json
from enum import IntEnum
from typing import IO, Any

import click


class ExitCode(IntEnum):
    OK = 0
    RUN_FAILED = 1  # a followed run (--watch) ended other than SUCCEEDED
    USAGE = 2  # bad command line, job file or input; the API's 400, 413, 415
    NOT_FOUND = 3  # no such job or run (404)
    CONFLICT = 4  # 409 (a name taken, a run already ended, the job busy) and 422
    AUTH = 5  # no token, a token command that failed, 401 or 403
    UNAVAILABLE = 6  # cannot reach the API, 5xx or 429, an answer off the OpenAPI models
    WAIT_TIMEOUT = 7  # --wait-timeout passed before the followed run ended
    INTERRUPTED = 130  # Ctrl-C


class CliError(click.ClickException):
    """An error shown on stderr as `error: <message>`, exiting with `code`."""

    def __init__(self, message: str, code: ExitCode, payload: object = None) -> None:
        super().__init__(message)
        self.exit_code = int(code)
        self.payload = payload  # what --json prints on stderr instead of the message

    def format_message(self) -> str:
        return self.message

    def show(self, file: IO[Any] | None = None) -> None:
        from scheduler_cli import output  # output imports the models; this module stays light

        if output.errors_as_json():
            payload = self.payload or {
                "error": {"code": ExitCode(self.exit_code).name.lower(), "message": self.message}
            }
            click.echo(json.dumps(payload, ensure_ascii=False), err=True)
        else:
            click.echo(f"error: {self.message}", err=True)
