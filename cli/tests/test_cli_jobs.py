"""`scheduler jobs ...`: what each command sends, prints and exits with."""

from __future__ import annotations

import json
from pathlib import Path

from cli_fakes import JOB_ID, FakeApi, Reply, Scheduler, error, job


def test_create_sends_the_options_as_a_job_and_prints_it(
    api: FakeApi, scheduler: Scheduler, tmp_path: Path
) -> None:
    # Given a script and a new job's options
    script = tmp_path / "report.py"
    script.write_text("print('hi')\n")
    api.reply("POST", "/jobs", Reply(201, job()))

    # When it is created
    result = scheduler(
        "jobs", "create", "--name", "report", "--schedule", "30 2 * * *", "--tz", "Europe/Paris",
        "--script", str(script), "--param", "region=eu", "--param", "count=5",
        "--param", 'label="007"', "--concurrency-policy", "forbid", "--catch-up", "LATEST",
        "--notify-on-failure", "--missed-after", "900", "--dst-gap", "SKIP",
        "--start-at", "2026-12-01T00:00:00+01:00", "--jitter", "30",
    )  # fmt: skip

    # Then the body holds exactly what was given, values as JSON when they parse
    assert result.exit_code == 0, result.stderr
    [sent] = api.calls("POST", "/jobs")
    assert sent.body == {
        "name": "report",
        "schedule": "30 2 * * *",
        "timezone": "Europe/Paris",
        "script": "print('hi')\n",
        "parameters": {"region": "eu", "count": 5, "label": "007"},
        "concurrency_policy": "FORBID",
        "catch_up": {"policy": "LATEST"},
        "notifications": {"on_failure": True, "missed_after_seconds": 900},
        "dst": {"gap": "SKIP"},
        "start_at": "2026-12-01T00:00:00+01:00",
        "jitter_seconds": 30,
    }
    assert sent.headers["authorization"] == "Bearer test-token"
    assert sent.headers["idempotency-key"].startswith("cli-")
    assert f"Created job report ({JOB_ID}): ACTIVE" in result.stdout


def test_create_from_a_yaml_job_file_with_options_on_top(
    api: FakeApi, scheduler: Scheduler, tmp_path: Path
) -> None:
    # Given a job file naming its script relative to itself
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "report.py").write_text("print(1)\n")
    (tmp_path / "jobs" / "report.yaml").write_text(
        "name: report\nschedule: '@daily'\nscript_file: report.py\n"
        "parameters: {region: eu}\nnotifications: {on_failure: true}\n"
    )
    api.reply("POST", "/jobs", Reply(201, job()))

    # When it is created with an option that overrides the file
    result = scheduler(
        "jobs", "create", str(tmp_path / "jobs" / "report.yaml"), "--late-after", "60", "--json"
    )

    # Then the file's fields and the options went together, and the API's job is printed
    assert result.exit_code == 0, result.stderr
    assert api.calls("POST", "/jobs")[0].body == {
        "name": "report",
        "schedule": "@daily",
        "script": "print(1)\n",
        "parameters": {"region": "eu"},
        "notifications": {"on_failure": True, "late_after_seconds": 60},
    }
    assert json.loads(result.stdout)["job_id"] == JOB_ID


def test_a_field_off_the_api_model_is_a_usage_error_before_any_request(
    api: FakeApi, scheduler: Scheduler, tmp_path: Path
) -> None:
    script = tmp_path / "s.py"
    script.write_text("pass\n")
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"name": "x", "schedule": "@daily", "colour": "red"}))

    too_long = scheduler(
        "jobs", "create", "--name", "x", "--schedule", "@daily", "--script", str(script),
        "--timeout-seconds", "99999",
    )  # fmt: skip
    unknown = scheduler("jobs", "create", str(job_file), "--script", str(script))
    no_script = scheduler("jobs", "create", "--name", "x", "--schedule", "@daily")
    naive = scheduler(
        "jobs", "create", "--name", "x", "--schedule", "@daily", "--script", str(script),
        "--end-at", "2027-01-01T00:00:00",
    )  # fmt: skip

    assert too_long.exit_code == 2
    assert "timeout_seconds: Input should be less than or equal to 3600" in too_long.stderr
    assert unknown.exit_code == 2
    assert "colour: Extra inputs are not permitted" in unknown.stderr
    assert no_script.exit_code == 2
    assert "script: Field required" in no_script.stderr
    assert naive.exit_code == 2
    assert "end_at" in naive.stderr
    assert api.seen == []


def test_the_api_refusing_a_create_exits_with_its_kind(
    api: FakeApi, scheduler: Scheduler, tmp_path: Path
) -> None:
    script = tmp_path / "s.py"
    script.write_text("pass\n")
    args = ("jobs", "create", "--name", "report", "--schedule", "@daily", "--script", str(script))

    api.reply(
        "POST",
        "/jobs",
        Reply(409, error("job_name_conflict", "you already have a job named 'report'")),
    )
    taken = scheduler(*args)
    api.reply(
        "POST",
        "/jobs",
        Reply(
            400,
            error(
                "validation_error",
                "invalid request",
                {"field": "schedule", "problem": "expected 5 fields"},
            ),
        ),
    )
    invalid = scheduler(*args)

    assert taken.exit_code == 4
    assert "error: job_name_conflict: you already have a job named 'report'" in taken.stderr
    assert invalid.exit_code == 2
    assert "schedule: expected 5 fields" in invalid.stderr


def test_a_create_is_retried_after_a_503_with_the_same_idempotency_key(
    api: FakeApi, scheduler: Scheduler, tmp_path: Path
) -> None:
    script = tmp_path / "s.py"
    script.write_text("pass\n")
    api.reply(
        "POST",
        "/jobs",
        Reply(503, error("service_unavailable", "busy")),
        Reply(201, job()),
    )

    result = scheduler(
        "jobs", "create", "--name", "report", "--schedule", "@daily", "--script", str(script)
    )

    assert result.exit_code == 0, result.stderr
    first, second = api.calls("POST", "/jobs")
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]


def test_list_shows_a_table_and_all_follows_the_pages(api: FakeApi, scheduler: Scheduler) -> None:
    other = job(job_id="f" * 32, name="backup", status="PAUSED", next_run_at=None)
    api.reply(
        "GET",
        "/jobs",
        {"items": [job()], "next_token": "page-2"},
        {"items": [other], "next_token": None},
    )

    result = scheduler("jobs", "list", "--all", "--status", "active", "--name", "re")

    assert result.exit_code == 0, result.stderr
    first, second = api.calls("GET", "/jobs")
    assert first.query == {"status": "ACTIVE", "name": "re", "limit": "20"}
    assert second.query == first.query | {"next_token": "page-2"}
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "JOB", "ID", "NAME", "SCHEDULE", "TIMEZONE", "STATUS", "NEXT", "RUN", "LAST", "RUN"
    ]  # fmt: skip
    assert rows[0].split()[:2] == [JOB_ID, "report"]
    assert rows[1].split()[:2] == ["f" * 32, "backup"]


def test_list_json_is_the_api_page_and_says_where_to_go_on(
    api: FakeApi, scheduler: Scheduler
) -> None:
    api.reply("GET", "/jobs", {"items": [job()], "next_token": "page-2"})

    result = scheduler("jobs", "list", "--json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"items": [job()], "next_token": "page-2"}


def test_a_job_is_found_by_its_name(api: FakeApi, scheduler: Scheduler) -> None:
    # Given two jobs whose names start with "report"
    api.reply(
        "GET",
        "/jobs",
        {"items": [job(job_id="e" * 32, name="report-old"), job()], "next_token": None},
    )

    # When one is asked for by name, then that one is shown
    result = scheduler("jobs", "get", "report")
    assert result.exit_code == 0, result.stderr
    assert api.calls("GET", "/jobs")[0].query["name"] == "report"
    shown = dict(line.split(maxsplit=1) for line in result.stdout.splitlines())
    assert shown["job_id"] == JOB_ID
    assert shown["notifications"].startswith('{"on_failure": true')

    # And an unknown name is not found
    missing = scheduler("jobs", "get", "nightly")
    assert missing.exit_code == 3
    assert "no job named or numbered 'nightly'" in missing.stderr


def test_a_job_id_is_asked_for_directly(api: FakeApi, scheduler: Scheduler) -> None:
    api.reply("GET", f"/jobs/{JOB_ID}", Reply(404, error("job_not_found", "no such job")))

    result = scheduler("jobs", "get", JOB_ID)

    assert result.exit_code == 3
    assert "job_not_found: no such job" in result.stderr
    assert [call.path for call in api.seen] == [f"/jobs/{JOB_ID}"]


def test_update_keeps_the_other_settings_of_an_object_it_changes(
    api: FakeApi, scheduler: Scheduler
) -> None:
    api.reply("GET", f"/jobs/{JOB_ID}", job())
    api.reply("PATCH", f"/jobs/{JOB_ID}", job(schedule="@hourly"))

    result = scheduler(
        "jobs", "update", JOB_ID, "--late-after", "120", "--schedule", "@hourly",
        "--clear", "description", "--param", "region=us",
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    [sent] = api.calls("PATCH")
    assert sent.body == {
        "schedule": "@hourly",
        "parameters": {"region": "us"},
        "notifications": {
            "on_failure": True,
            "late_after_seconds": 120,
            "missed_after_seconds": 900,
        },
        "description": None,
    }
    assert "Updated job report" in result.stdout


def test_update_with_nothing_to_change_is_a_usage_error(api: FakeApi, scheduler: Scheduler) -> None:
    api.reply("GET", f"/jobs/{JOB_ID}", job())

    result = scheduler("jobs", "update", JOB_ID)

    assert result.exit_code == 2
    assert api.calls("PATCH") == []


def test_pause_resume_and_delete(api: FakeApi, scheduler: Scheduler) -> None:
    api.reply("GET", f"/jobs/{JOB_ID}", job())
    api.reply("POST", f"/jobs/{JOB_ID}/pause", job(status="PAUSED", next_run_at=None))
    api.reply("POST", f"/jobs/{JOB_ID}/resume", job())
    api.reply("DELETE", f"/jobs/{JOB_ID}", Reply(204))

    paused = scheduler("jobs", "pause", JOB_ID)
    resumed = scheduler("jobs", "resume", JOB_ID, "--json")
    deleted = scheduler("jobs", "delete", JOB_ID)

    assert paused.exit_code == resumed.exit_code == deleted.exit_code == 0
    assert "Paused job report" in paused.stdout
    assert "PAUSED, next run -" in paused.stdout
    assert json.loads(resumed.stdout)["status"] == "ACTIVE"
    assert f"Deleted job report ({JOB_ID})" in deleted.stdout
    assert len(api.calls("DELETE")) == 1


def test_a_busy_job_is_a_conflict(api: FakeApi, scheduler: Scheduler) -> None:
    api.reply("GET", f"/jobs/{JOB_ID}", job())
    api.reply("POST", f"/jobs/{JOB_ID}/pause", Reply(409, error("job_busy", "retry")))

    assert scheduler("jobs", "pause", JOB_ID).exit_code == 4


def test_preview_of_a_schedule_and_of_a_job(api: FakeApi, scheduler: Scheduler) -> None:
    occurrences = {
        "schedule": "30 2 * * *",
        "timezone": "America/New_York",
        "occurrences": [
            {"at": "2026-03-08T07:30:00Z", "local": "2026-03-08T03:30:00-04:00", "dst": "shifted"}
        ],
    }
    api.reply("POST", "/schedules/preview", occurrences)
    api.reply("GET", f"/jobs/{JOB_ID}", job())
    api.reply("GET", f"/jobs/{JOB_ID}/preview", occurrences)

    tried = scheduler("preview", "--schedule", "30 2 * * *", "--tz", "America/New_York",
                      "--count", "3", "--dst-gap", "next_valid")  # fmt: skip
    of_job = scheduler("preview", JOB_ID, "--count", "1")
    neither = scheduler("preview")

    assert tried.exit_code == 0, tried.stderr
    assert api.calls("POST", "/schedules/preview")[0].body == {
        "schedule": "30 2 * * *",
        "timezone": "America/New_York",
        "count": 3,
        "dst": {"gap": "NEXT_VALID"},
    }
    assert "2026-03-08 07:30:00+00:00  2026-03-08 03:30:00-04:00  shifted" in tried.stdout
    assert of_job.exit_code == 0, of_job.stderr
    assert api.calls("GET", f"/jobs/{JOB_ID}/preview")[0].query == {"count": "1"}
    assert neither.exit_code == 2
