"""`scheduler run`, `runs ...` and `backfill`: what they send, follow, print and exit with."""

from __future__ import annotations

import json

from cli_fakes import JOB_ID, RUN_KEY, TOKEN, FakeApi, Reply, Scheduler, error, job, run

RUN_PATH = f"/jobs/{JOB_ID}/runs/{RUN_KEY}"


def test_run_now_sends_its_parameters_and_reason(api: FakeApi, scheduler: Scheduler) -> None:
    api.reply("GET", f"/jobs/{JOB_ID}", job())
    api.reply("POST", f"/jobs/{JOB_ID}/run", Reply(202, run(reason="INC-42")))

    result = scheduler(
        "run", JOB_ID, "--param", "region=us", "--param", "dry=true", "--reason", "INC-42"
    )

    assert result.exit_code == 0, result.stderr
    assert api.calls("POST")[0].body == {
        "parameters": {"region": "us", "dry": True},
        "reason": "INC-42",
    }
    assert f"Started run {RUN_KEY}: QUEUED" in result.stdout


def test_run_now_without_options_sends_no_body(api: FakeApi, scheduler: Scheduler) -> None:
    api.reply("GET", f"/jobs/{JOB_ID}", job())
    api.reply("POST", f"/jobs/{JOB_ID}/run", Reply(202, run()))

    result = scheduler("run", JOB_ID, "--json")

    assert result.exit_code == 0, result.stderr
    assert api.calls("POST")[0].body is None
    assert json.loads(result.stdout)["key"] == RUN_KEY


def test_watch_follows_the_run_to_its_end_and_prints_its_output(
    api: FakeApi, scheduler: Scheduler
) -> None:
    # Given a run that goes through its states and succeeds
    api.reply("GET", f"/jobs/{JOB_ID}", job())
    api.reply("POST", f"/jobs/{JOB_ID}/run", Reply(202, run()))
    api.reply(
        "GET",
        RUN_PATH,
        run(status="DISPATCHED"),
        run(status="RUNNING"),
        run(status="RUNNING"),
        run(status="SUCCEEDED", exit_code=0, duration_ms=56, output_tail="hello\n"),
    )

    # When it is run with --watch
    result = scheduler("run", JOB_ID, "--watch", "--interval", "0.1")

    # Then each change of status is told once, on stderr, and the output is on stdout
    assert result.exit_code == 0, result.stderr
    told = [line.split(" ", 2)[2] for line in result.stderr.splitlines()]
    assert told == [
        "QUEUED (attempt 1/3)",
        "DISPATCHED (attempt 1/3)",
        "RUNNING (attempt 1/3)",
        "SUCCEEDED (attempt 1/3), exit code 0, 56 ms",
    ]
    assert result.stdout == "hello\n"
    assert len(api.calls("GET", RUN_PATH)) == 4


def test_watch_of_a_failed_run_exits_1_and_json_prints_the_final_run(
    api: FakeApi, scheduler: Scheduler
) -> None:
    api.reply("GET", f"/jobs/{JOB_ID}", job())
    api.reply("POST", f"/jobs/{JOB_ID}/run", Reply(202, run()))
    failed = run(status="FAILED", attempt=3, exit_code=2, output_tail="boom\n", error="exit 2")
    api.reply("GET", RUN_PATH, run(status="PENDING", attempt=2), failed)

    result = scheduler("run", JOB_ID, "--watch", "--interval", "0.1", "--json")

    assert result.exit_code == 1
    assert json.loads(result.stdout) == failed
    assert result.stderr == ""


def test_watch_prints_the_full_output_from_its_link_without_the_token(
    api: FakeApi, scheduler: Scheduler
) -> None:
    # Given a finished run whose output is in S3: the API answers 307 to a presigned link
    api.reply("GET", f"/jobs/{JOB_ID}", job())
    api.reply("GET", RUN_PATH, run(status="SUCCEEDED", exit_code=0, output_key="outputs/x/1.log"))
    api.reply("GET", f"{RUN_PATH}/output", Reply(307, None, {"Location": f"{api.url}/blob?sig=1"}))
    api.reply("GET", "/blob", Reply(200, "line 1\nline 2\n"))

    # When it is watched (already ended), and its output asked for
    watched = scheduler("runs", "get", JOB_ID, RUN_KEY, "--watch")
    output = scheduler("runs", "output", JOB_ID, RUN_KEY)

    # Then the full output is printed, and the link was fetched without the bearer token
    assert watched.exit_code == 0, watched.stderr
    assert watched.stdout == "line 1\nline 2\n"
    assert output.exit_code == 0, output.stderr
    assert output.stdout == "line 1\nline 2\n"
    assert all("authorization" not in call.headers for call in api.calls("GET", "/blob"))
    assert api.calls("GET", f"{RUN_PATH}/output")[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_watch_gives_up_after_the_wait_timeout(api: FakeApi, scheduler: Scheduler) -> None:
    api.reply("GET", f"/jobs/{JOB_ID}", job())
    api.reply("GET", RUN_PATH, run(status="RUNNING"))

    result = scheduler(
        "runs", "get", JOB_ID, RUN_KEY, "--watch", "--interval", "0.1", "--wait-timeout", "0.3"
    )

    assert result.exit_code == 7
    assert f"run {RUN_KEY} still RUNNING after 0.3 s" in result.stderr


def test_runs_list_and_the_latest_run(api: FakeApi, scheduler: Scheduler) -> None:
    finished = run(status="SUCCEEDED", exit_code=0, duration_ms=1500, output_tail="ok\n")
    api.reply("GET", f"/jobs/{JOB_ID}", job())
    api.reply("GET", f"/jobs/{JOB_ID}/runs", {"items": [finished], "next_token": None})

    listed = scheduler("runs", "list", JOB_ID)
    latest = scheduler("runs", "get", JOB_ID, "latest")

    assert listed.exit_code == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split()[:3] == ["KEY", "TRIGGER", "STATUS"]
    assert row.split()[:4] == [RUN_KEY, "MANUAL", "SUCCEEDED", "1/3"]
    assert "1.5 s" in row
    assert latest.exit_code == 0, latest.stderr
    assert api.calls("GET", f"/jobs/{JOB_ID}/runs")[-1].query == {"limit": "1"}
    assert latest.stdout.splitlines()[0].split() == ["key", RUN_KEY]
    assert latest.stdout.endswith("output_tail:\nok\n")


def test_a_job_without_runs_has_no_latest(api: FakeApi, scheduler: Scheduler) -> None:
    api.reply("GET", f"/jobs/{JOB_ID}", job())
    api.reply("GET", f"/jobs/{JOB_ID}/runs", {"items": [], "next_token": None})

    assert scheduler("runs", "output", JOB_ID, "latest").exit_code == 3


def test_cancel_sends_the_reason_and_a_run_that_had_ended_is_a_conflict(
    api: FakeApi, scheduler: Scheduler
) -> None:
    api.reply("GET", f"/jobs/{JOB_ID}", job())
    api.reply(
        "POST",
        f"{RUN_PATH}/cancel",
        run(status="CANCELLED", error="cancelled by its owner: wrong input"),
        Reply(409, error("run_ended", f"run {RUN_KEY!r} has already ended: SUCCEEDED")),
    )

    cancelled = scheduler("runs", "cancel", JOB_ID, RUN_KEY, "--reason", "wrong input")
    ended = scheduler("runs", "cancel", JOB_ID, RUN_KEY)

    assert cancelled.exit_code == 0, cancelled.stderr
    assert api.calls("POST")[0].body == {"reason": "wrong input"}
    assert "CANCELLED (attempt 1/3): cancelled by its owner: wrong input" in cancelled.stdout
    assert ended.exit_code == 4
    assert "run_ended" in ended.stderr


def test_backfill_dry_run(api: FakeApi, scheduler: Scheduler) -> None:
    api.reply("GET", f"/jobs/{JOB_ID}", job())
    api.reply(
        "POST",
        f"/jobs/{JOB_ID}/backfill",
        {
            "occurrences": [
                {
                    "scheduled_at": "2026-11-26T01:30:00Z",
                    "run_key": f"1795700000-{JOB_ID}",
                    "result": "would_create",
                }
            ]
        },
    )

    result = scheduler(
        "backfill", JOB_ID, "--from", "2026-11-26T00:00:00Z", "--to", "2026-11-27T00:00Z",
        "--dry-run",
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    assert api.calls("POST")[0].body == {
        "from": "2026-11-26T00:00:00Z",
        "to": "2026-11-27T00:00:00Z",
        "dry_run": True,
    }
    assert f"1795700000-{JOB_ID}  would_create" in result.stdout
