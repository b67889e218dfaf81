"""The `scheduler` command: every route of the API, for people (tables) and scripts (--json and
exit codes). Reference: docs/cli.md."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from click.shell_completion import CompletionItem, get_completion_class

from scheduler_cli import __version__, bodies, config, output
from scheduler_cli.api_models import (
    BackfillRequest,
    CancelRequest,
    CatchUpPolicy,
    ConcurrencyPolicy,
    Gap,
    JobCreate,
    JobStatus,
    JobUpdate,
    Repeat,
    Run,
    RunNowRequest,
    RunStatus,
    SchedulePreviewRequest,
)
from scheduler_cli.client import Answer, Client
from scheduler_cli.exit_codes import CliError, ExitCode

F = TypeVar("F", bound=Callable[..., Any])

TERMINAL = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.TIMED_OUT,
        RunStatus.SKIPPED,
        RunStatus.CANCELLED,
    }
)
EXIT_CODES_HELP = """\b
Exit codes:
  0  ok
  1  a followed run (--watch) ended FAILED, TIMED_OUT, CANCELLED or SKIPPED
  2  usage: a bad command line, job file or field (checked before sending), or the API's 400
  3  not found: no such job or run (404)
  4  conflict: 409 (a name taken, a run already ended, the job busy) or 422
  5  auth: no token, a failing token command, 401 or 403
  6  unavailable: the API cannot be reached, 5xx, 429, or an answer off its OpenAPI models
  7  --wait-timeout passed before the followed run ended
"""


def choices(enum: Any) -> click.Choice:
    """The values of one of the API's enums (from its OpenAPI document)."""
    return click.Choice([member.value for member in enum], case_sensitive=False)


@dataclass
class Settings:
    """The root command's options, and the client built from them on first use."""

    profile: str | None = None
    api_url: str | None = None
    as_json: bool = False
    timeout: float = 30.0
    _client: Client | None = field(default=None, repr=False)

    def target(self) -> tuple[str, str | None, config.Profile | None]:
        """The API URL, and the profile that goes with it (if any)."""
        loaded = config.load()
        if self.profile is not None:
            profile = loaded.profiles.get(self.profile)
            if profile is None:
                known = ", ".join(sorted(loaded.profiles)) or "none yet"
                raise CliError(
                    f"no profile named {self.profile!r} (profiles: {known})", ExitCode.USAGE
                )
            return (self.api_url or profile.url), self.profile, profile
        if self.api_url is not None:
            # the profile for this URL, if one was made by `login`
            wanted = self.api_url.rstrip("/")
            for name, profile in sorted(loaded.profiles.items()):
                if profile.url.rstrip("/") == wanted:
                    return self.api_url, name, profile
            return self.api_url, None, None
        if loaded.current and loaded.current in loaded.profiles:
            return (
                loaded.profiles[loaded.current].url,
                loaded.current,
                loaded.profiles[loaded.current],
            )
        raise CliError(
            "no API to talk to: run `scheduler login URL`, or give --api-url "
            "(or SCHEDULER_API_URL) and SCHEDULER_TOKEN",
            ExitCode.USAGE,
        )

    def client(self) -> Client:
        if self._client is None:
            url, name, profile = self.target()
            token = os.environ.get("SCHEDULER_TOKEN", "").strip()
            if not token:
                if profile is None or name is None:
                    raise CliError(
                        f"no token for {url}: set SCHEDULER_TOKEN or run `scheduler login {url}`",
                        ExitCode.AUTH,
                    )
                token = config.resolve_token(name, profile)
            self._client = Client(url, token, self.timeout)
        return self._client


def settings() -> Settings:
    return click.get_current_context().ensure_object(Settings)


def json_option(command: F) -> F:
    """`--json` after the command too (`scheduler jobs list --json`)."""

    def turn_on(ctx: click.Context, _: click.Parameter, value: bool) -> None:
        if value:
            ctx.ensure_object(Settings).as_json = True
            output.json_errors(True)

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=turn_on,
        help="Print the API's JSON instead of a table.",
    )(command)


# -- completion of names -------------------------------------------------------------------


def complete_profiles(
    _: click.Context, __: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    try:
        names = config.load().profiles
    except CliError:
        return []
    return [CompletionItem(name) for name in sorted(names) if name.startswith(incomplete)]


def complete_jobs(ctx: click.Context, _: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Your jobs' names, asked of the API (quietly nothing when it cannot be asked)."""
    root = ctx.find_root().params
    try:
        client = Settings(profile=root.get("profile"), api_url=root.get("api_url"), timeout=3.0)
        page = client.client().list_jobs(name=incomplete or None, limit=100)
    except (CliError, OSError):
        return []
    return [CompletionItem(job.name, help=job.schedule) for job in page.model.items]


# -- the root command ----------------------------------------------------------------------


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.option(
    "-p",
    "--profile",
    envvar="SCHEDULER_PROFILE",
    shell_complete=complete_profiles,
    help="Profile to use (default: the current one, see `scheduler profiles`). "
    "Env: SCHEDULER_PROFILE.",
)
@click.option(
    "--api-url",
    envvar="SCHEDULER_API_URL",
    metavar="URL",
    help="API to talk to, with the token of the profile made for that URL, or SCHEDULER_TOKEN. "
    "Env: SCHEDULER_API_URL.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's) for scripts.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    envvar="SCHEDULER_TIMEOUT",
    help="How long to wait for each HTTP answer. Env: SCHEDULER_TIMEOUT.",
)
@click.version_option(__version__, "-V", "--version", prog_name="scheduler")
@click.pass_context
def cli(
    ctx: click.Context, profile: str | None, api_url: str | None, as_json: bool, timeout: float
) -> None:
    """Create and run scheduled Python jobs through the scheduler's HTTP API.

    \b
    Start (in a clone, with `make run` going):
      scheduler login http://127.0.0.1:3000 --token-command "make -s -C $PWD token"
      scheduler jobs create --name hello --schedule '*/5 * * * *' --script hello.py
      scheduler run hello --watch

    A JOB is a job's id or its name. A KEY is a run's key, or `latest`. The token of a
    profile comes from a command, an environment variable, a file or `login`; SCHEDULER_TOKEN
    overrides it. Reference: docs/cli.md.
    """
    state = ctx.ensure_object(Settings)
    state.profile, state.api_url, state.timeout = profile, api_url, timeout
    state.as_json = as_json
    output.json_errors(as_json)
    ctx.call_on_close(lambda: state._client.close() if state._client else None)


# -- login and profiles --------------------------------------------------------------------


@cli.command()
@click.argument("url")
@click.option("-p", "--profile", "name", help="Profile name (default: the URL's host:port).")
@click.option(
    "--token-command",
    metavar="CMD",
    help="Shell command printing a token (its last line is taken), run by each command.",
)
@click.option("--token-env", metavar="VAR", help="Environment variable holding the token.")
@click.option(
    "--token-file", type=click.Path(dir_okay=False), help="File holding the token (read each time)."
)
@click.option("--token-stdin", is_flag=True, help="Read a token from stdin and store it (0600).")
@click.option("--no-verify", is_flag=True, help="Save without asking the API.")
@json_option
def login(
    url: str,
    name: str | None,
    token_command: str | None,
    token_env: str | None,
    token_file: str | None,
    token_stdin: bool,
    no_verify: bool,
) -> None:
    """Save a profile for an API URL and make it current.

    The token comes from exactly one of --token-command, --token-env, --token-file and
    --token-stdin; without any, you are asked for it and it is stored in
    ~/.config/scheduler/credentials.json (mode 0600). The token is checked with one request
    (GET /jobs?limit=1) before anything is saved.

    \b
    scheduler login http://127.0.0.1:3000 --token-command "make -s -C $PWD token USER=alice"
    scheduler login https://api.example.com --profile prod --token-env PROD_TOKEN
    """
    given = [s for s in (token_command, token_env, token_file) if s] + ([1] if token_stdin else [])
    if len(given) > 1:
        raise click.UsageError(
            "give one of --token-command, --token-env, --token-file and --token-stdin"
        )
    if not url.startswith(("http://", "https://")):
        raise click.UsageError(f"the URL must start with http:// or https://, not {url!r}")
    url = url.rstrip("/")
    name = name or config.default_profile_name(url)
    profile = config.Profile(
        url=url, token_command=token_command, token_env=token_env, token_file=token_file
    )
    stored = None
    if token_stdin or (not given and not sys.stdin.isatty()):
        stored = sys.stdin.read().strip()
    elif not given:
        stored = click.prompt("Token", hide_input=True).strip()
    if stored is not None and not stored:
        raise CliError("no token given", ExitCode.AUTH)
    token = stored or config.resolve_token(name, profile)
    if not no_verify:
        client = Client(url, token, settings().timeout)
        try:
            client.list_jobs(limit=1)
        finally:
            client.close()
    loaded = config.load()
    loaded.profiles[name] = profile
    loaded.current = name
    config.save(loaded)
    config.store_token(name, stored)
    who = config.token_claims(token).get("sub")
    if settings().as_json:
        output.emit_json({"profile": name, "url": url, "sub": who, "current": True})
        return
    click.echo(f"Logged in to {url}" + (f" as {who}" if who else "") + f" (profile {name!r}).")


@cli.command()
@click.option("-p", "--profile", "name", shell_complete=complete_profiles, help="Default: current.")
def logout(name: str | None) -> None:
    """Forget a profile and its stored token."""
    loaded = config.load()
    name = name or settings().profile or loaded.current
    if name is None or name not in loaded.profiles:
        raise CliError(f"no profile named {name!r}", ExitCode.USAGE)
    del loaded.profiles[name]
    if loaded.current == name:
        loaded.current = None
    config.save(loaded)
    config.store_token(name, None)
    click.echo(f"Forgot profile {name!r}.")


@cli.group()
def profiles() -> None:
    """List the profiles, or choose the current one."""


@profiles.command("list")
@json_option
def profiles_list() -> None:
    """The profiles: name, API URL, where the token comes from; * marks the current one."""
    loaded = config.load()
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "url": profile.url,
            "token": profile.token_source(),
            "current": name == loaded.current,
        }
        for name, profile in sorted(loaded.profiles.items())
    ]
    if settings().as_json:
        output.emit_json(rows)
        return
    if not rows:
        click.echo("No profile yet: run `scheduler login URL`.")
        return
    output.table(
        ("", "NAME", "URL", "TOKEN"),
        [
            ("*" if row["current"] else "", str(row["name"]), str(row["url"]), str(row["token"]))
            for row in rows
        ],
    )


@profiles.command("use")
@click.argument("name", shell_complete=complete_profiles)
def profiles_use(name: str) -> None:
    """Make a profile the current one."""
    loaded = config.load()
    if name not in loaded.profiles:
        raise CliError(f"no profile named {name!r}", ExitCode.USAGE)
    loaded.current = name
    config.save(loaded)
    click.echo(f"Using profile {name!r} ({loaded.profiles[name].url}).")


# -- jobs ----------------------------------------------------------------------------------


@cli.group()
def jobs() -> None:
    """Create, list, show, change, pause, resume and delete jobs."""


def job_options(for_update: bool) -> Callable[[F], F]:
    """The options that set a job's fields, shared by create and update."""
    options = [
        click.option(
            "--script",
            "script_path",
            metavar="PATH",
            help="Python file to run (`-` reads stdin).",
        ),
        click.option("--schedule", help="5-field cron, @daily..., at(...) or rate(...)."),
        click.option("--timezone", "--tz", "timezone", help="IANA zone (create's default: UTC)."),
        click.option(
            "--param",
            "params",
            multiple=True,
            metavar="KEY=VALUE",
            help="A parameter (VALUE as JSON if it parses, else text); repeatable."
            + (" The parameters given replace the job's." if for_update else ""),
        ),
        click.option(
            "--params-file", metavar="PATH", help="YAML/JSON object of parameters (--param on top)."
        ),
        click.option("--description", help="At most 1024 characters."),
        click.option(
            "--timeout-seconds", type=int, metavar="SECONDS", help="1-3600 (default 300)."
        ),
        click.option(
            "--max-attempts", type=int, metavar="N", help="1-10, retries included (default 3)."
        ),
        click.option(
            "--concurrency-policy",
            type=choices(ConcurrencyPolicy),
            help="When the previous run is still running (default ALLOW).",
        ),
        click.option("--catch-up", type=choices(CatchUpPolicy), help="After an outage."),
        click.option("--catch-up-window", type=int, metavar="SECONDS", help="60-604800."),
        click.option(
            "--notify-on-failure/--no-notify-on-failure",
            default=None,
            help="Tell the owner (SNS) when a run fails.",
        ),
        click.option(
            "--late-after", type=int, metavar="SECONDS", help="Tell when a run starts late."
        ),
        click.option(
            "--missed-after", type=int, metavar="SECONDS", help="Tell when a run has not succeeded."
        ),
        click.option("--start-at", metavar="ISO8601", help="No run before (with an offset)."),
        click.option("--end-at", metavar="ISO8601", help="No run after (with an offset)."),
        click.option(
            "--jitter", type=int, metavar="SECONDS", help="Start up to this late, 0-3600."
        ),
        click.option("--dst-gap", type=choices(Gap), help="A skipped wall time."),
        click.option("--dst-repeat", type=choices(Repeat), help="A repeated wall time."),
        click.option(
            "--pause-after-failures", type=int, metavar="N", help="Pause after N failed runs."
        ),
    ]
    if for_update:
        options.append(
            click.option(
                "--clear",
                multiple=True,
                type=click.Choice(["description", "start_at", "end_at"]),
                help="Unset a field; repeatable.",
            )
        )
    else:
        options.insert(0, click.option("--name", help="Unique among your jobs."))
        options.append(
            click.option(
                "--idempotency-key",
                help="Makes a retried create return the first job (default: a new one each time).",
            )
        )

    def apply(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def job_fields(options: dict[str, Any]) -> dict[str, Any]:
    """The body fields the options set (nested objects holding only what was given)."""
    found: dict[str, Any] = {}
    simple = {
        "name": "name",
        "schedule": "schedule",
        "timezone": "timezone",
        "description": "description",
        "timeout_seconds": "timeout_seconds",
        "max_attempts": "max_attempts",
        "concurrency_policy": "concurrency_policy",
        "start_at": "start_at",
        "end_at": "end_at",
        "jitter": "jitter_seconds",
        "pause_after_failures": "pause_after_failures",
    }
    for option, key in simple.items():
        value = options.get(option)
        if value is not None:
            found[key] = value.upper() if option == "concurrency_policy" else value
    if options.get("script_path"):
        found["script"] = bodies.read_text(options["script_path"], "script")
    params = bodies.parameters(options.get("params_file"), options.get("params") or ())
    if params is not None:
        found["parameters"] = params
    nested = {
        "notifications": {
            "on_failure": options.get("notify_on_failure"),
            "late_after_seconds": options.get("late_after"),
            "missed_after_seconds": options.get("missed_after"),
        },
        "catch_up": {
            "policy": (options.get("catch_up") or "").upper() or None,
            "window_seconds": options.get("catch_up_window"),
        },
        "dst": {
            "gap": (options.get("dst_gap") or "").upper() or None,
            "repeat": (options.get("dst_repeat") or "").upper() or None,
        },
    }
    for key, values in nested.items():
        given = {name: value for name, value in values.items() if value is not None}
        if given:
            found[key] = given
    for cleared in options.get("clear") or ():
        found[cleared] = None
    return found


def show_job(answer: Answer[Any], verb: str) -> None:
    if settings().as_json:
        output.emit_json(answer.data)
        return
    job = answer.model
    next_run = output.when(job.next_run_at)
    click.echo(f"{verb} job {job.name} ({job.job_id}): {job.status.value}, next run {next_run}")


@jobs.command("create")
@click.argument("job_file", required=False, metavar="[JOB_FILE]")
@job_options(for_update=False)
@json_option
def jobs_create(job_file: str | None, idempotency_key: str | None, **options: Any) -> None:
    """Create a job from options, a YAML/JSON job file, or both (options win).

    A job file holds the fields of POST /jobs (name, schedule, timezone, parameters, script or
    script_file, description, timeout_seconds, max_attempts, concurrency_policy,
    notifications, catch_up, start_at, end_at, jitter_seconds, dst, pause_after_failures);
    `script_file` is read relative to the job file. The body is checked against the API's
    JobCreate model before it is sent.

    \b
    scheduler jobs create --name report --schedule '30 2 * * *' --tz Europe/Paris \\
        --script report.py --param region=eu --catch-up LATEST --notify-on-failure
    scheduler jobs create report.yaml
    """
    body = bodies.merge(bodies.job_file(job_file) if job_file else {}, job_fields(options))
    checked = bodies.checked(JobCreate, body, "job")
    show_job(settings().client().create_job(checked, idempotency_key), "Created")


@jobs.command("list")
@click.option("--status", type=choices(JobStatus))
@click.option("--name", metavar="PREFIX", help="Jobs whose name starts with this.")
@click.option("--created-after", metavar="ISO8601")
@click.option("--created-before", metavar="ISO8601")
@click.option("--next-run-after", metavar="ISO8601")
@click.option("--next-run-before", metavar="ISO8601")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True, metavar="N")
@click.option("--next-token", help="Page on from here (printed after a page with more).")
@click.option("--all", "every", is_flag=True, help="Every page.")
@json_option
def jobs_list(every: bool, status: str | None, **filters: Any) -> None:
    """Your jobs, newest first."""
    filters["status"] = status.upper() if status else None
    client = settings().client()
    pages = list(client.all_jobs(**filters)) if every else [client.list_jobs(**filters)]
    items = [job for page in pages for job in page.model.items]
    next_token = pages[-1].model.next_token
    if settings().as_json:
        data = [item for page in pages for item in page.data["items"]]
        output.emit_json({"items": data, "next_token": next_token})
        return
    if not items:
        click.echo("No job." if next_token is None else "No job on this page.")
    output.job_rows(items)
    if next_token:
        click.echo(f"More: --next-token {next_token}", err=True)


@jobs.command("get")
@click.argument("job", shell_complete=complete_jobs)
@json_option
def jobs_get(job: str) -> None:
    """One job: every field, and its last run."""
    answer = settings().client().find_job(job)
    if settings().as_json:
        output.emit_json(answer.data)
        return
    output.job_details(answer.model, answer.data)


@jobs.command("update")
@click.argument("job", shell_complete=complete_jobs)
@click.argument("job_file", required=False, metavar="[JOB_FILE]")
@job_options(for_update=True)
@json_option
def jobs_update(job: str, job_file: str | None, **options: Any) -> None:
    """Change a job: only the fields given (from options and/or a job file) change.

    The parameters given replace the job's. --notify-*, --late-after, --missed-after,
    --catch-up*, --dst-* change that one setting and keep the others (the CLI reads the job
    first). A new schedule or time zone moves the next run to its next occurrence from now.
    """
    client = settings().client()
    found = client.find_job(job)
    body = bodies.merge(bodies.job_file(job_file) if job_file else {}, job_fields(options))
    if not body:
        raise click.UsageError("nothing to change: give an option or a job file")
    for nested in ("notifications", "catch_up", "dst"):
        if isinstance(body.get(nested), dict):
            current = found.data.get(nested) or {}
            body[nested] = bodies.merge(current, body[nested])
    checked = bodies.checked(JobUpdate, body, "change")
    show_job(client.update_job(found.model.job_id, checked), "Updated")


@jobs.command("pause")
@click.argument("job", shell_complete=complete_jobs)
@json_option
def jobs_pause(job: str) -> None:
    """Pause a job: no new runs until resumed (a run already queued still runs)."""
    client = settings().client()
    show_job(client.pause_job(client.find_job(job).model.job_id), "Paused")


@jobs.command("resume")
@click.argument("job", shell_complete=complete_jobs)
@json_option
def jobs_resume(job: str) -> None:
    """Resume a paused job from now on (missed occurrences are not made up)."""
    client = settings().client()
    show_job(client.resume_job(client.find_job(job).model.job_id), "Resumed")


@jobs.command("delete")
@click.argument("job", shell_complete=complete_jobs)
@json_option
def jobs_delete(job: str) -> None:
    """Delete a job and free its name (a run already queued still runs)."""
    client = settings().client()
    found = client.find_job(job).model
    client.delete_job(found.job_id)
    if settings().as_json:
        output.emit_json({"deleted": found.job_id, "name": found.name})
        return
    click.echo(f"Deleted job {found.name} ({found.job_id}).")


# -- runs ----------------------------------------------------------------------------------


@cli.group()
def runs() -> None:
    """A job's runs: list, show (and follow), output, cancel."""


@runs.command("list")
@click.argument("job", shell_complete=complete_jobs)
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True, metavar="N")
@click.option("--next-token", help="Page on from here (printed after a page with more).")
@click.option("--all", "every", is_flag=True, help="Every page.")
@json_option
def runs_list(job: str, limit: int, next_token: str | None, every: bool) -> None:
    """A job's runs, newest first."""
    client = settings().client()
    job_id = client.find_job(job).model.job_id
    params = {"limit": limit, "next_token": next_token}
    pages = (
        list(client.all_runs(job_id, **params)) if every else [client.list_runs(job_id, **params)]
    )
    items = [run for page in pages for run in page.model.items]
    last_token = pages[-1].model.next_token
    if settings().as_json:
        data = [item for page in pages for item in page.data["items"]]
        output.emit_json({"items": data, "next_token": last_token})
        return
    if not items:
        click.echo("No run yet.")
    output.run_rows(items)
    if last_token:
        click.echo(f"More: --next-token {last_token}", err=True)


def watch_options(command: F) -> F:
    command = click.option(
        "--wait-timeout",
        type=click.FloatRange(min=0),
        metavar="SECONDS",
        help="With --watch: give up (exit 7) after this long.",
    )(command)
    command = click.option(
        "--interval",
        type=click.FloatRange(min=0.1),
        default=1.0,
        show_default=True,
        metavar="SECONDS",
        help="With --watch: seconds between looks.",
    )(command)
    return click.option(
        "--watch",
        "-w",
        is_flag=True,
        help="Follow the run to its end, then print its output; exit 1 unless it SUCCEEDED.",
    )(command)


def follow(job_id: str, first: Answer[Run], interval: float, wait_timeout: float | None) -> None:
    """Follow a run to its end: each change of status on stderr, then the output on stdout
    (--json: the final run). Exit 1 unless it SUCCEEDED."""
    client, as_json = settings().client(), settings().as_json
    deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
    answer, seen = first, None
    while True:
        run = answer.model
        if (run.status, run.attempt) != seen and not as_json:
            stamp = datetime.now(UTC).astimezone().strftime("%H:%M:%S")
            click.echo(f"{stamp} {run.key} {output.run_summary(run)}", err=True)
        seen = (run.status, run.attempt)
        if run.status in TERMINAL:
            break
        if deadline is not None and time.monotonic() >= deadline:
            raise CliError(
                f"run {run.key} still {run.status.value} after {wait_timeout:g} s",
                ExitCode.WAIT_TIMEOUT,
            )
        time.sleep(interval)
        answer = client.get_run(job_id, run.key)
    if as_json:
        output.emit_json(answer.data)
    else:
        text = client.run_output(job_id, run.key) if run.output_key else run.output_tail or ""
        click.echo(text, nl=bool(text) and not text.endswith("\n"))
    if run.status is not RunStatus.SUCCEEDED:
        click.get_current_context().exit(ExitCode.RUN_FAILED)


@runs.command("get")
@click.argument("job", shell_complete=complete_jobs)
@click.argument("key")
@watch_options
@json_option
def runs_get(job: str, key: str, watch: bool, interval: float, wait_timeout: float | None) -> None:
    """One run (KEY, or `latest`): its status, times, exit code and output tail."""
    client = settings().client()
    job_id = client.find_job(job).model.job_id
    answer = client.find_run(job_id, key)
    if watch:
        follow(job_id, answer, interval, wait_timeout)
    elif settings().as_json:
        output.emit_json(answer.data)
    else:
        output.run_details(answer.model, answer.data)


@runs.command("output")
@click.argument("job", shell_complete=complete_jobs)
@click.argument("key")
def runs_output(job: str, key: str) -> None:
    """A run's full output (KEY, or `latest`), as the script printed it (at most 1 MiB)."""
    client = settings().client()
    job_id = client.find_job(job).model.job_id
    run_key = client.find_run(job_id, key).model.key if key == "latest" else key
    text = client.run_output(job_id, run_key)
    click.echo(text, nl=False)


@runs.command("cancel")
@click.argument("job", shell_complete=complete_jobs)
@click.argument("key")
@click.option("--reason", help="Recorded in the run's error.")
@json_option
def runs_cancel(job: str, key: str, reason: str | None) -> None:
    """Cancel a run that has not ended (exit 4 if it had)."""
    client = settings().client()
    job_id = client.find_job(job).model.job_id
    run_key = client.find_run(job_id, key).model.key if key == "latest" else key
    bodies.checked(CancelRequest, {} if reason is None else {"reason": reason}, "cancel")
    answer = client.cancel_run(job_id, run_key, reason)
    if settings().as_json:
        output.emit_json(answer.data)
        return
    click.echo(f"{answer.model.key} {output.run_summary(answer.model)}")


# -- run now, backfill, preview ------------------------------------------------------------


@cli.command("run")
@click.argument("job", shell_complete=complete_jobs)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="This run's parameter (VALUE as JSON if it parses, else text); repeatable. Given any, "
    "the run gets these instead of the job's.",
)
@click.option("--params-file", metavar="PATH", help="YAML/JSON object of this run's parameters.")
@click.option("--reason", help="Recorded on the run (e.g. a ticket).")
@watch_options
@json_option
def run_now(
    job: str,
    params: tuple[str, ...],
    params_file: str | None,
    reason: str | None,
    watch: bool,
    interval: float,
    wait_timeout: float | None,
) -> None:
    """Run a job now, through the same pipeline as scheduled runs.

    \b
    scheduler run report --param region=us --reason INC-42 --watch
    """
    body: dict[str, Any] = {}
    given = bodies.parameters(params_file, params)
    if given is not None:
        body["parameters"] = given
    if reason is not None:
        body["reason"] = reason
    checked = bodies.checked(RunNowRequest, body, "run")
    client = settings().client()
    job_id = client.find_job(job).model.job_id
    answer = client.run_now(job_id, checked)
    if watch:
        follow(job_id, answer, interval, wait_timeout)
    elif settings().as_json:
        output.emit_json(answer.data)
    else:
        click.echo(f"Started run {answer.model.key}: {output.run_summary(answer.model)}")


@cli.command()
@click.argument("job", shell_complete=complete_jobs)
@click.option("--from", "start", required=True, metavar="ISO8601", help="First instant.")
@click.option("--to", "end", required=True, metavar="ISO8601", help="Last instant (past).")
@click.option("--dry-run", is_flag=True, help="List what would run; create nothing.")
@click.option("--reason", help="Recorded on the runs.")
@json_option
def backfill(job: str, start: str, end: str, dry_run: bool, reason: str | None) -> None:
    """Run the occurrences of a past range that have no run yet (at most 100).

    \b
    scheduler backfill report --from 2026-11-26T00:00Z --to 2026-11-27T00:00Z --dry-run
    """
    body: dict[str, Any] = {"from": start, "to": end, "dry_run": dry_run}
    if reason is not None:
        body["reason"] = reason
    checked = bodies.checked(BackfillRequest, body, "backfill")
    client = settings().client()
    answer = client.backfill(client.find_job(job).model.job_id, checked)
    if settings().as_json:
        output.emit_json(answer.data)
        return
    output.backfill_rows(answer.model)


@cli.command()
@click.argument("job", required=False, shell_complete=complete_jobs)
@click.option("--schedule", help="Try this schedule instead of a job's.")
@click.option("--timezone", "--tz", "timezone", help="With --schedule (default UTC).")
@click.option("--dst-gap", type=choices(Gap), help="With --schedule.")
@click.option("--dst-repeat", type=choices(Repeat), help="With --schedule.")
@click.option("--count", type=click.IntRange(1, 100), default=10, show_default=True, metavar="N")
@click.option("--after", metavar="ISO8601", help="From this instant (default: now).")
@json_option
def preview(
    job: str | None,
    schedule: str | None,
    timezone: str | None,
    dst_gap: str | None,
    dst_repeat: str | None,
    count: int,
    after: str | None,
) -> None:
    """The next occurrences of a job, or of a schedule no job has yet.

    \b
    scheduler preview report
    scheduler preview --schedule '30 2 * * *' --tz America/New_York --count 5
    """
    if (job is None) == (schedule is None):
        raise click.UsageError("give a JOB or --schedule, not both")
    client = settings().client()
    if job is not None:
        if timezone or dst_gap or dst_repeat:
            raise click.UsageError("--timezone and --dst-* go with --schedule")
        answer = client.preview_job(client.find_job(job).model.job_id, count, after)
    else:
        body: dict[str, Any] = {"schedule": schedule, "count": count}
        if timezone:
            body["timezone"] = timezone
        if after:
            body["after"] = after
        dst = {
            key: value.upper() for key, value in (("gap", dst_gap), ("repeat", dst_repeat)) if value
        }
        if dst:
            body["dst"] = dst
        answer = client.preview_schedule(bodies.checked(SchedulePreviewRequest, body, "schedule"))
    if settings().as_json:
        output.emit_json(answer.data)
        return
    output.preview_rows(answer.model)


# -- shell completion ----------------------------------------------------------------------


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script (commands, options, profiles, your job names).

    \b
    bash:  eval "$(scheduler completion bash)"        # in ~/.bashrc
    zsh:   eval "$(scheduler completion zsh)"         # in ~/.zshrc
    fish:  scheduler completion fish > ~/.config/fish/completions/scheduler.fish
    """
    kind = get_completion_class(shell)
    if kind is None:  # pragma: no cover (click knows all three)
        raise CliError(f"no completion for {shell}", ExitCode.USAGE)
    click.echo(kind(cli, {}, "scheduler", "_SCHEDULER_COMPLETE").source())


def main() -> None:
    """The console entry point: the documented exit codes, errors on stderr."""
    try:
        code = cli.main(prog_name="scheduler", standalone_mode=False)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except KeyboardInterrupt:
        sys.exit(ExitCode.INTERRUPTED)
    sys.exit(code if isinstance(code, int) else ExitCode.OK)
