"""`python -m devstack run`: moto, the template's resources, and the services that drive the
functions the way AWS does (the API gateway now; the watcher timer and the SQS poller later).

Every long-running part is a `Service`; the stack starts them in order, watches them, and on
Ctrl-C / SIGTERM (or when one fails) stops them all in reverse order, so nothing outlives it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from devstack import auth, docker_backend, iam, images, output, pipeline, resources, sam_local
from devstack.gateway import ApiGateway
from devstack.lambda_runtime import Handler, context_for, load_handler
from devstack.moto_server import AttachedAws, MotoServer, port_in_use
from devstack.template import ROOT, Stack, local_stack
from devstack.workers import FunctionWorkers

HOST = "127.0.0.1"
DEFAULT_API_PORT = 3000
DEFAULT_MOTO_PORT = 4566
DEFAULT_STATE_DIR = ROOT / ".local"
REGION = "us-east-1"
PAGE_TOKEN_SECRET_FILE = "page-token-secret"  # noqa: S105  # a file name
STATE_FILE = "stack.json"
AWS_STATE_DIR = "aws"  # moto's snapshot and journal, under the state directory


class Service(Protocol):
    """A long-running part of the local stack.

    Optional, found by duck typing: a `name` attribute (for messages) and a `failure()`
    method returning why the service stopped working on its own, or None while it is healthy
    (the stack stops everything when one fails).
    """

    def start(self) -> None:
        """Start and return once ready; raise if it cannot."""

    def stop(self) -> None:
        """Stop and release everything it started; must be safe to call twice."""


def service_name(service: Service) -> str:
    return str(getattr(service, "name", None) or type(service).__name__)


@dataclass(frozen=True)
class Config:
    api_port: int = DEFAULT_API_PORT
    moto_port: int = DEFAULT_MOTO_PORT
    state_dir: Path = DEFAULT_STATE_DIR
    prefix: str = "local"
    watcher_interval_seconds: float = 60.0  # the EventBridge rule is rate(1 minute)
    # With a 60 s interval, the second of the minute the ticks fire at; None: drawn at start.
    watcher_second: int | None = None
    # Emulated Fargate start: each task starts after a delay drawn from [low, high] seconds.
    task_start_delay: tuple[float, float] = (0.0, 0.0)
    retry_base_seconds: int = 30
    schedule_shards: int = 4  # moto answers ~50 queries/s: fewer shards keep a tick quick
    host: str = HOST
    # An AWS endpoint (moto server) already running: used as is, neither started nor stopped.
    aws_endpoint: str | None = None
    # Set in every function's environment after the template's (e.g. DISPATCH_GRACE_SECONDS).
    function_env: tuple[tuple[str, str], ...] = ()
    # How runner tasks start: "local" (a subprocess, no Docker) or "docker" (a container of
    # `runner_image`, the template's RunnerImageUri; built locally when None).
    dispatch: str = "local"
    runner_image: str | None = None
    # IAM enforced by moto, each function as a role with its template policies (devstack.iam).
    iam: bool = True
    # (function, action) pairs taken out of the functions' policies (`--iam-revoke`).
    iam_revoke: tuple[tuple[str, str], ...] = ()
    # Start with empty AWS state (moto's snapshot and journal removed) instead of the last one.
    fresh: bool = False
    # Worker processes running the HTTP API's functions (0: in this process, one at a time).
    api_workers: int = 4
    # Invocations at once per event source (SQS pollers, task-stopped events), each in a worker
    # process started as load needs it (0: in this process, one at a time per function).
    function_workers: int = 4

    @property
    def issuer(self) -> str:
        return auth.issuer_for(self.api_port)

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"


class Functions:
    """The stack's Lambda functions inside this process, each loaded once (a warm container)
    and invoked one call at a time, with its own environment on top, as Lambda would set it.

    The HTTP API's functions share one lock: powertools keeps the current event in class
    attributes shared by every resolver in a process, so two concurrent API invocations would
    see each other's caller. Other functions (watcher, executor ...) each have their own lock,
    so a slow tick does not stall the API.

    Cold starts (loading a handler) take one more lock, shared by all: two threads importing
    the same packages at once can see a partly initialised module (powertools' circular
    imports fail with KeyError / "cannot import name"), e.g. when a restarted stack finds
    messages waiting for several functions at once.
    """

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self._handlers: dict[str, Handler] = {}
        api_lock = threading.Lock()
        api_functions = {route.function for route in stack.routes()}
        self._locks = {
            name: api_lock if name in api_functions else threading.Lock()
            for name in stack.functions
        }
        self._cold_start = threading.Lock()

    def load(self, function: str) -> Handler:
        """The function's handler, imported on first use (a cold start)."""
        handler = self._handlers.get(function)
        if handler is None:
            with self._cold_start:
                os.environ.update(self.stack.environment(function))
                handler = self._handlers[function] = load_handler(self.stack, function)
        return handler

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        with self._locks[function]:
            os.environ.update(self.stack.environment(function))
            # Its AWS calls are signed as its role (devstack.iam), as Lambda gives each
            # function its own.
            as_function = iam.CURRENT_FUNCTION.set(function)
            try:
                handler = self.load(function)
                return handler(event, context_for(self.stack, function))
            finally:
                iam.CURRENT_FUNCTION.reset(as_function)


@dataclass
class Runtime:
    """What a service factory gets to build its service from."""

    config: Config
    stack: Stack
    functions: Functions
    keys: auth.KeyPair
    aws_endpoint: str


# A factory builds one service, or several (e.g. one SQS poller per event source mapping).
ServiceFactory = Callable[[Runtime], "Service | Sequence[Service]"]


def _api_gateway(runtime: Runtime) -> list[Service]:
    config = runtime.config
    workers = None
    if config.api_workers:
        # Each worker signs its functions' calls as their roles too, when IAM is enforced.
        principals = iam.load_credentials(config.state_dir)
        api_functions = [route.function for route in runtime.stack.routes()]
        workers = FunctionWorkers(
            "api-worker", runtime.stack, list(set(api_functions)), config.api_workers, principals
        )
    gateway = ApiGateway(
        runtime.stack,
        workers or runtime.functions,
        authorizer=auth.JwtAuthorizer(
            issuer=config.issuer,
            audiences=runtime.stack.parameters["JwtAudience"].split(","),
            jwks=runtime.keys.jwks(),
        ),
        host=config.host,
        port=config.api_port,
        documents=runtime.keys.discovery_documents(config.issuer),
    )
    return [workers, gateway] if workers else [gateway]


def _pipeline(runtime: Runtime) -> list[Service]:
    """The watcher's timer (the EventBridge rule), in this process: it runs one tick at a
    time (reserved concurrency 1); the SQS pollers (event source mappings) and the task
    events poller (the task-stopped rule), whose functions run in worker processes."""
    config, stack = runtime.config, runtime.stack
    pipeline.notifications_sink(stack)  # where run notifications can be read locally
    if config.dispatch == "docker":  # a killed stack's stopped containers
        docker_backend.remove_containers(config.state_dir / "tasks", running=False)
    services: list[Service] = []
    invoke = runtime.functions.invoke
    concurrency = max(1, config.function_workers)
    if config.function_workers:
        # As many workers as the pollers may run invocations at once, so that no function's
        # batch waits for another's worker (Lambda scales each function on its own).
        workers = FunctionWorkers(
            "function-worker",
            stack,
            pipeline.event_functions(stack),
            pipeline.event_concurrency(stack, concurrency),
            iam.load_credentials(config.state_dir),
            warm=1,
        )
        services.append(workers)
        invoke = workers.invoke
    return [
        *services,
        *pipeline.sqs_pollers(stack, invoke, concurrency),
        pipeline.task_events_poller(stack, invoke, concurrency),
        pipeline.watcher_timer(
            stack,
            runtime.functions.invoke,
            config.watcher_interval_seconds,
            config.watcher_second,
            config.state_dir,
        ),
    ]


SERVICES: list[ServiceFactory] = [_api_gateway, _pipeline]


def aws_environment(endpoint: str) -> dict[str, str]:
    """Fake credentials and moto's endpoint for every AWS client in this process; the user's
    ~/.aws files are ignored so that nothing can reach a real account."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }


def function_environment(stack: Stack) -> dict[str, str]:
    """The union of every function's environment (the settings ignore what they do not use).
    A variable two functions set differently is left out: Functions.invoke sets it per call."""
    union: dict[str, str] = {}
    conflicting: set[str] = set()
    for function in stack.functions:
        try:
            environment = stack.environment(function)
        except (KeyError, ValueError, TypeError) as error:
            # That function fails when invoked; the others (the API) still work.
            print(f"devstack: cannot resolve {function}'s environment: {error!r}", file=sys.stderr)
            continue
        for key, value in environment.items():
            if union.setdefault(key, value) != value:
                conflicting.add(key)
    return {key: value for key, value in union.items() if key not in conflicting}


class _Stop(BaseException):
    """Raised in the main thread by SIGINT/SIGTERM: unwinds startup or the wait loop."""


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    def handler(signum: int, _: FrameType | None) -> None:
        # Further signals while stopping are ignored: the stop is already under way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass
class Supervisor:
    """Starts services in order, watches them, and stops every started one in reverse."""

    started: list[Service] = field(default_factory=list)

    def start(self, service: Service) -> None:
        # Registered first: a service that fails half-way through start() still gets stop().
        self.started.append(service)
        service.start()

    def watch(self, interval: float = 0.5) -> str:
        """Block until a service fails; return its failure."""
        while True:
            for service in self.started:
                failure = getattr(service, "failure", None)
                problem = failure() if failure else None
                if problem:
                    return f"{service_name(service)}: {problem}"
            time.sleep(interval)

    def stop_all(self) -> None:
        while self.started:
            service = self.started.pop()
            try:
                service.stop()
            except Exception as error:  # stop the others regardless
                name = service_name(service)
                print(f"devstack: stopping {name} failed: {error}", file=sys.stderr)


def _say(text: str = "") -> None:
    print(text, flush=True)


def _banner(config: Config, runtime: Runtime) -> None:
    api = config.api_url
    how_to_mint = "make token USER=alice"
    if config.api_port != DEFAULT_API_PORT:
        how_to_mint = f"DEVSTACK_API_PORT={config.api_port} {how_to_mint}"
    _say()
    _say(f"  Job API       {api}")
    _say(f"  Swagger UI    {api}/docs   (OpenAPI: {api}/openapi.json)")
    _say(f"  AWS (moto)    {runtime.aws_endpoint}")
    _say(f"  Token issuer  {config.issuer}   (audience {runtime.stack.parameters['JwtAudience']})")
    _say(f"  State         {config.state_dir}")
    _say()
    _say(f"  Get a bearer token:  {how_to_mint}")
    _say("  Try it:")
    _say(f"    TOKEN=$({how_to_mint} | tail -n1)")
    _say(
        f'    curl -s -X POST {api}/jobs -H "Authorization: Bearer $TOKEN" '
        "-H 'Content-Type: application/json' \\"
    )
    _say("""      -d '{"name": "hello", "schedule": "*/5 * * * *", "script": "print(\\"hi\\")"}'""")
    _say(f'    curl -s {api}/jobs -H "Authorization: Bearer $TOKEN"')
    _say()
    _say("  Ctrl-C stops everything.")
    _say()


def _write_state(config: Config, moto: MotoServer | AttachedAws) -> Path:
    path = config.state_dir / STATE_FILE
    state = {
        "pid": os.getpid(),
        "moto_pid": moto.pid,
        "api_url": config.api_url,
        "aws_endpoint": moto.endpoint,
        "issuer": config.issuer,
        "dispatch": config.dispatch,
        "iam": config.iam,
    }
    path.write_text(json.dumps(state, indent=2) + "\n")
    return path


def _create_resources(config: Config, stack: Stack, endpoint: str, supervisor: Supervisor) -> None:
    """The template's resources in moto, the functions' environment in this process, and for
    sam local the `--env-vars` file and (where Docker's bridge exists) the relay by which SAM's
    containers reach moto (sam_local.py; never fatal: the stack runs without)."""
    resources.create_all(stack)
    os.environ.update(function_environment(stack))
    bridge = sam_local.bridge_address()
    relay = sam_local.relay_for(endpoint, bridge)
    if relay is not None:
        try:
            supervisor.start(relay)
        except OSError as error:
            print(f"devstack: no relay for sam local: {error}", file=sys.stderr)
            bridge = None
    sam_local.write_env_file(
        config.state_dir, stack, sam_local.container_endpoint(endpoint, bridge)
    )


def _enforce_iam(config: Config, stack: Stack, endpoint: str) -> None:
    """With `config.iam`: a role per function in moto, moto enforcing IAM, the admin's keys for
    the stack's own calls, and `<state dir>/aws-credentials.json` (0600) for tests and sam
    local. Without: the fake keys as they are, nothing checked."""
    saved = config.state_dir / iam.CREDENTIALS_FILE
    saved.unlink(missing_ok=True)
    if not config.iam:
        _say("devstack: IAM not enforced (--iam off): every call is allowed")
        return
    revoke: dict[str, set[str]] = {}
    for function, action in config.iam_revoke:
        revoke.setdefault(function, set()).add(action)
    principals = iam.enforce(stack, endpoint, revoke)
    iam.install(principals)
    principals.save(config.state_dir)
    revoked = ", ".join(f"{f}={a}" for f, a in config.iam_revoke)
    _say(
        f"devstack: IAM enforced: {len(principals.functions)} function roles"
        + (f"; revoked {revoked}" if revoked else "")
    )


def _parameters(config: Config) -> dict[str, str]:
    """The template parameters the local stack sets."""
    parameters = {
        "JwtIssuer": config.issuer,
        "JwtAudience": auth.AUDIENCE,
        "ScheduleShards": str(config.schedule_shards),
    }
    if config.dispatch == "docker":
        parameters["RunnerImageUri"] = _runner_image(config)
    return parameters


def _runner_image(config: Config) -> str:
    """The image the docker backend runs: the one given, else the runner image built locally
    (Docker installed and started if missing; cached). RuntimeError if Docker is not there."""
    try:
        images.ensure_engine()
        if config.runner_image is None:
            _say("devstack: building the runner image (cached; the first time ~1 min) ...")
            return images.ensure_runner_image()
    except images.DockerUnavailable as error:
        raise RuntimeError(f"--dispatch docker needs Docker: {error}") from error
    if not images.image_exists(config.runner_image):
        raise RuntimeError(f"no image {config.runner_image!r} in the Docker engine")
    return config.runner_image


def _aws(config: Config) -> MotoServer | AttachedAws:
    """The stack's AWS: the endpoint given, or moto server keeping its state in
    <state dir>/aws (removed first with --fresh)."""
    if config.aws_endpoint:
        attached = AttachedAws(config.aws_endpoint)
        _say(f"devstack: attaching to the AWS endpoint {attached.endpoint} ...")
        return attached
    aws_state = config.state_dir / AWS_STATE_DIR
    if config.fresh and aws_state.exists():
        shutil.rmtree(aws_state)
        _say(f"devstack: --fresh: removed the saved AWS state ({aws_state})")
    moto = MotoServer(
        config.host, config.moto_port, config.state_dir / "moto.log", state_dir=aws_state
    )
    _say(f"devstack: starting moto server on {moto.endpoint} (state: {aws_state}) ...")
    return moto


def quiet_and_whole_lines() -> None:
    """For every process that runs functions: stdout in whole lines (devstack.output), and no
    warning for metrics, which are off locally (nothing to publish to; powertools would warn
    on every call)."""
    output.whole_lines()
    warnings.filterwarnings("ignore", message="No application metrics to publish")


def run(config: Config) -> int:
    """Run the local stack until SIGINT/SIGTERM (exit 0) or until a service fails (exit 1)."""
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    quiet_and_whole_lines()
    if port_in_use(config.host, config.api_port):
        print(
            f"devstack: port {config.api_port} is already in use; stop what runs there or pass "
            "--api-port",
            file=sys.stderr,
        )
        return 1
    keys = auth.KeyPair.load_or_create(config.state_dir)
    page_token_secret = auth.load_or_create_secret(config.state_dir, PAGE_TOKEN_SECRET_FILE)
    supervisor = Supervisor()
    state_file: Path | None = None
    code = 0
    with _stop_on_signals():
        try:
            moto = _aws(config)
            supervisor.start(moto)
            os.environ.update(aws_environment(moto.endpoint))
            stack = local_stack(
                config.prefix, _parameters(config), {"PageTokenSecret": page_token_secret}
            )
            _enforce_iam(config, stack, moto.endpoint)
            stack.overrides = pipeline.local_overrides(
                stack,
                config.state_dir,
                config.retry_base_seconds,
                dict(config.function_env),
                task_start_delay=config.task_start_delay,
                dispatch=config.dispatch,
            )
            _create_resources(config, stack, moto.endpoint, supervisor)
            runtime = Runtime(config, stack, Functions(stack), keys, moto.endpoint)
            for factory in SERVICES:
                built = factory(runtime)
                for service in built if isinstance(built, Sequence) else [built]:
                    _say(f"devstack: starting {service_name(service)} ...")
                    supervisor.start(service)
            state_file = _write_state(config, moto)
            _banner(config, runtime)
            problem = supervisor.watch()
            print(f"devstack: {problem}; stopping", file=sys.stderr)
            code = 1
        except _Stop as stop:
            _say(f"\ndevstack: {stop} received; stopping ...")
        except RuntimeError as error:  # a service could not start; its message says why
            print(f"devstack: {error}; stopping", file=sys.stderr)
            code = 1
        except Exception:
            traceback.print_exc()
            print("devstack: startup failed; stopping", file=sys.stderr)
            code = 1
        finally:
            supervisor.stop_all()
            if state_file is not None:
                state_file.unlink(missing_ok=True)
    _say("devstack: stopped")
    return code
