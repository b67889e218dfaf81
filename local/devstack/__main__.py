"""python -m devstack run | token <user> | image

`run` starts the local stack (moto, the template's resources, the API on 127.0.0.1:3000) until
Ctrl-C. `token` prints a bearer token that the local stack's authorizer accepts, as its last
line. Both read DEVSTACK_API_PORT, DEVSTACK_MOTO_PORT and DEVSTACK_STATE_DIR as defaults.
`image` makes Docker available and builds the runner image on a local Debian base (cached),
printing its tag as the last line: what `--dispatch docker` runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from devstack import auth, deploy, images, pipeline, stack


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _assignment(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _tick_second(text: str) -> int | None:
    if text == "random":
        return None
    second = int(text)
    if not 0 <= second <= 59:
        raise argparse.ArgumentTypeError("a second of the minute, 0-59, or 'random'")
    return second


def _seconds_range(text: str) -> tuple[float, float]:
    low, dash, high = text.partition("-")
    try:
        bounds = (float(low), float(high if dash else low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SECONDS or LOW-HIGH, got {text!r}") from None
    if not 0 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"expected 0 <= LOW <= HIGH, got {text!r}")
    return bounds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api-port",
        type=int,
        default=_env_int("DEVSTACK_API_PORT", stack.DEFAULT_API_PORT),
        help="port of the job API (default %(default)s; env DEVSTACK_API_PORT)",
    )
    common.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("DEVSTACK_STATE_DIR") or stack.DEFAULT_STATE_DIR),
        help="keys, secrets and logs of the local stack (default %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", parents=[common], help="start the local stack")
    run.add_argument(
        "--moto-port",
        type=int,
        default=_env_int("DEVSTACK_MOTO_PORT", stack.DEFAULT_MOTO_PORT),
        help="port of moto server (default %(default)s; env DEVSTACK_MOTO_PORT)",
    )
    run.add_argument("--prefix", default="local", help="prefix of the resources' names")
    run.add_argument(
        "--watcher-interval",
        type=float,
        default=float(os.environ.get("DEVSTACK_WATCHER_INTERVAL") or 60),
        help="seconds between watcher ticks (default %(default)s, like rate(1 minute))",
    )
    run.add_argument(
        "--watcher-second",
        type=_tick_second,
        default=_tick_second(os.environ.get("DEVSTACK_WATCHER_SECOND") or "random"),
        metavar="SECOND|random",
        help="with a 60 s interval, the second of the minute each tick fires at, like the "
        "EventBridge rule (default random, drawn at start; env DEVSTACK_WATCHER_SECOND)",
    )
    run.add_argument(
        "--task-start-delay",
        type=_seconds_range,
        default=_seconds_range(os.environ.get("DEVSTACK_TASK_START_DELAY") or "0"),
        metavar="SECONDS|LOW-HIGH",
        help="emulate Fargate: each runner task starts after a delay drawn uniformly from this "
        "range, e.g. 30-90 (default 0; the dispatch lead is sized for HIGH; env "
        "DEVSTACK_TASK_START_DELAY)",
    )
    run.add_argument(
        "--retry-base-seconds",
        type=int,
        default=_env_int("DEVSTACK_RETRY_BASE_SECONDS", 30),
        help="first retry delay; doubles each attempt (default %(default)s)",
    )
    run.add_argument(
        "--aws-endpoint",
        default=os.environ.get("DEVSTACK_AWS_ENDPOINT") or None,
        metavar="URL",
        help="use the moto server already running there instead of starting one (it is left "
        "running; resources that exist are kept; --moto-port is then unused; env "
        "DEVSTACK_AWS_ENDPOINT)",
    )
    run.add_argument(
        "--dispatch",
        choices=pipeline.DISPATCH_BACKENDS,
        default=os.environ.get("DEVSTACK_DISPATCH") or "local",
        help="how runner tasks start: local, a subprocess (default, no Docker); docker, a "
        "container of the runner image shaped like the task definition (env DEVSTACK_DISPATCH)",
    )
    run.add_argument(
        "--runner-image",
        default=os.environ.get("DEVSTACK_RUNNER_IMAGE") or None,
        metavar="IMAGE",
        help="with --dispatch docker: the image to run (default: the runner image built "
        "locally, as `python -m devstack image`; env DEVSTACK_RUNNER_IMAGE)",
    )
    run.add_argument(
        "--api-workers",
        type=int,
        default=_env_int("DEVSTACK_API_WORKERS", 4),
        help="worker processes running the API's functions, each one invocation at a time "
        "(default %(default)s; 0: in the stack's process, one at a time; env "
        "DEVSTACK_API_WORKERS)",
    )
    run.add_argument(
        "--function-workers",
        type=int,
        default=_env_int("DEVSTACK_FUNCTION_WORKERS", 4),
        help="invocations at once of each event-driven function (executor, run reports, task "
        "events; fewer where the template caps an SQS source), each in a worker process started "
        "as load needs it (default %(default)s; 0: in the stack's process, one at a time per "
        "function; env DEVSTACK_FUNCTION_WORKERS)",
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        default=bool(os.environ.get("DEVSTACK_FRESH")),
        help="start with empty AWS state: remove the jobs, runs, scripts and queues kept in "
        "<state-dir>/aws from the last run (keys and tokens are kept; env DEVSTACK_FRESH=1)",
    )
    run.add_argument(
        "--function-env",
        action="append",
        default=[],
        type=_assignment,
        metavar="NAME=VALUE",
        help="set NAME in every function's environment, over the template's; repeatable, "
        "e.g. --function-env DISPATCH_GRACE_SECONDS=30 --function-env LOOKAHEAD_SECONDS=10",
    )
    run.add_argument(
        "--iam",
        choices=["on", "off"],
        default=os.environ.get("DEVSTACK_IAM") or "on",
        help="on (default): each function calls moto as a role with only its template policies "
        "and moto enforces them; off: every call as one unchecked principal, for debugging "
        "(env DEVSTACK_IAM)",
    )
    run.add_argument(
        "--iam-revoke",
        action="append",
        default=[],
        type=_assignment,
        metavar="FUNCTION=ACTION",
        help="take ACTION (e.g. s3:PutObject) out of FUNCTION's policies (its logical id, e.g. "
        "CreateJobFunction); repeatable: what a missing grant does",
    )

    token = commands.add_parser("token", parents=[common], help="print a bearer token")
    token.add_argument("user", nargs="?", default="alice", help="the token's sub claim")
    token.add_argument(
        "--expires-in",
        type=int,
        default=auth.TOKEN_LIFETIME_SECONDS,
        help="lifetime in seconds (default %(default)s; negative for an expired token)",
    )
    token.add_argument("--audience", default=auth.AUDIENCE)

    image = commands.add_parser(
        "image",
        help="install and start Docker if missing, build the runner image (cached); print its tag",
    )
    image.add_argument(
        "--lambda-base",
        action="store_true",
        help="build the base for `sam local --invoke-image` instead (the Lambda runtime "
        "interface on the same Debian base)",
    )

    deploy = commands.add_parser(
        "deploy", help="build, check and push the runner image, then sam build and sam deploy"
    )
    deploy.add_argument(
        "--ecr-repo", required=True, help="<account>.dkr.ecr.<region>.amazonaws.com/<repo>"
    )
    deploy.add_argument("--config-env", default="default", help="samconfig.toml environment")
    deploy.add_argument("--architecture", choices=["arm64", "x86_64"], default="arm64")
    deploy.add_argument("--dry-run", action="store_true", help="print the commands, run none")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    if arguments.command == "deploy":
        return deploy.main(
            arguments.ecr_repo, arguments.config_env, arguments.architecture, arguments.dry_run
        )
    if arguments.command == "image":
        try:
            lambda_base = arguments.lambda_base
            build = images.ensure_lambda_base_image if lambda_base else images.ensure_runner_image
            print(build())
        except images.DockerUnavailable as error:
            print(f"devstack: {error}", file=sys.stderr)
            return 1
        return 0
    state_dir: Path = arguments.state_dir.resolve()
    if arguments.command == "run":
        config = stack.Config(
            api_port=arguments.api_port,
            moto_port=arguments.moto_port,
            state_dir=state_dir,
            prefix=arguments.prefix,
            watcher_interval_seconds=arguments.watcher_interval,
            watcher_second=arguments.watcher_second,
            task_start_delay=arguments.task_start_delay,
            retry_base_seconds=arguments.retry_base_seconds,
            aws_endpoint=arguments.aws_endpoint,
            function_env=tuple(arguments.function_env),
            dispatch=arguments.dispatch,
            runner_image=arguments.runner_image,
            iam=arguments.iam == "on",
            iam_revoke=tuple(arguments.iam_revoke),
            fresh=arguments.fresh,
            api_workers=arguments.api_workers,
            function_workers=arguments.function_workers,
        )
        return stack.run(config)
    keys = auth.KeyPair.load_or_create(state_dir)
    issuer = auth.issuer_for(arguments.api_port)
    token = keys.mint(
        arguments.user,
        issuer=issuer,
        audience=arguments.audience,
        lifetime_seconds=arguments.expires_in,
    )
    expires = datetime.fromtimestamp(
        datetime.now(UTC).timestamp() + arguments.expires_in, UTC
    ).isoformat(timespec="seconds")
    print(
        f"# bearer token for sub={arguments.user}, iss={issuer}, expires {expires}", file=sys.stderr
    )
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
