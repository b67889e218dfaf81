"""moto server in its own process: the local stack's AWS (`devstack.moto_app`: moto's own
server with faster DynamoDB transactions and queries, and with a state directory, durable)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

_PR_SET_PDEATHSIG = 1


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def _die_with_parent(parent: int) -> None:
    """Runs in the child before exec: ask Linux to SIGTERM it when the stack's process dies, so
    that even a `kill -9` of the stack leaves no orphaned moto behind."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class MotoServer:
    """`python -m devstack.moto_app` on host:port, its state kept in `state_dir` (None: in
    memory only); start() returns once it answers HTTP (after restoring its state)."""

    name = "moto"
    # What `python -m` runs: moto's app with its state on disk (moto_app), presigned S3
    # requests authorised as their signer under IAM enforcement (below).
    module = "devstack.moto_app"

    def __init__(
        self,
        host: str,
        port: int,
        log_path: Path,
        startup_timeout: float = 120.0,
        state_dir: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.state_dir = state_dir
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        if port_in_use(self.host, self.port):
            raise RuntimeError(
                f"port {self.port} is already in use (another local stack or moto?); stop it "
                "or pick another port with --moto-port"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        parent = os.getpid()
        command = [sys.executable, "-m", self.module, "-H", self.host, "-p", str(self.port)]
        if self.state_dir is not None:
            command += ["--state-dir", str(self.state_dir)]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            # Its own session: a Ctrl-C in the terminal reaches the stack only, which then
            # stops moto in order.
            start_new_session=True,
            preexec_fn=lambda: _die_with_parent(parent),  # noqa: PLW1509
        )
        self._wait_until_ready()

    def environment(self) -> dict[str, str]:
        """The server's environment: ours, without an endpoint pointing at some other AWS, with
        `devstack` importable."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
        local = str(Path(__file__).resolve().parents[1])
        path = [local, *filter(None, inherited.get("PYTHONPATH", "").split(os.pathsep))]
        return inherited | {"PYTHONPATH": os.pathsep.join(dict.fromkeys(path))}

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            problem = self.failure()
            if problem:
                raise RuntimeError(problem)
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):  # noqa: S310
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        raise RuntimeError(
            f"moto server did not answer on {self.endpoint} within {self.startup_timeout:.0f} s;"
            f" see {self.log_path}"
        )

    def failure(self) -> str | None:
        if self._process is None:
            return None
        code = self._process.poll()
        if code is None:
            return None
        return f"moto server exited with code {code}; see {self.log_path}"

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None


class AttachedAws:
    """An AWS endpoint (moto server) that someone else runs: `python -m devstack run
    --aws-endpoint URL`. start() only checks that it answers HTTP; stop() leaves it running, so
    its data outlives the stack (a restarted stack finds its tables, queues and bucket)."""

    name = "aws (attached)"
    pid: int | None = None

    def __init__(self, endpoint: str, startup_timeout: float = 30.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.startup_timeout = startup_timeout

    def start(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):  # noqa: S310
                    return
            except urllib.error.HTTPError:
                return  # it answers HTTP (not moto, or no dashboard): good enough
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"nothing answers on {self.endpoint} (--aws-endpoint): {error}"
                    ) from error
                time.sleep(0.1)

    def stop(self) -> None:
        """Not ours to stop."""


# -- moto with presigned S3 requests under IAM enforcement --------------------------------------


def allow_presigned_requests() -> None:
    """moto's IAM enforcement reads the `Authorization` header of every request; a presigned
    URL has none (its signature is in the query string), so moto answers it 500. Here a request
    without that header that names its signer's key (`X-Amz-Credential` for SigV4,
    `AWSAccessKeyId` for SigV2) is authorised as AWS would: against the
    policies of the principal that signed it (the executor's role for the runner's URLs), for
    the action and object it names. Its signature is not verified (moto does not verify
    presigned signatures either); an unsigned request is refused."""
    from urllib.parse import parse_qs, urlparse

    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import (
        CreateAccessKeyFailure,
        IAMPolicy,
        PermissionResult,
        create_access_key,
    )
    from moto.s3.exceptions import S3AccessDeniedError, S3InvalidAccessKeyIdError
    from moto.utilities.utils import get_partition

    checked = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def authorize(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        enforcing = ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT
        if not enforcing or "Authorization" in self.headers:
            checked(self, iam_request_cls, resource)
            return
        query = {k.lower(): v[0] for k, v in parse_qs(urlparse(self.uri).query).items()}
        # SigV4 (X-Amz-Credential: key/date/region/s3/aws4_request) or SigV2 (AWSAccessKeyId)
        access_key_id = query.get("x-amz-credential", "").split("/")[0] or query.get(
            "awsaccesskeyid"
        )
        if not access_key_id:
            raise S3AccessDeniedError
        token = query.get("x-amz-security-token")
        try:
            signer = create_access_key(
                account_id=self.current_account,
                partition=get_partition(self.region),
                access_key_id=access_key_id,
                headers={"X-Amz-Security-Token": token} if token else {},
            )
        except CreateAccessKeyFailure as error:
            raise S3InvalidAccessKeyIdError from error
        action = f"s3:{self._get_action()}"
        results = [
            IAMPolicy(policy).is_action_permitted(action, resource)
            for policy in signer.collect_policies()
        ]
        if PermissionResult.DENIED in results or PermissionResult.PERMITTED not in results:
            raise S3AccessDeniedError

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authorize  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    """`python -m devstack.moto_server ARGS`: moto server (`python -m moto.server ARGS`) with
    presigned S3 requests authorised under IAM enforcement."""
    from moto.server import main as moto_main

    allow_presigned_requests()
    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
