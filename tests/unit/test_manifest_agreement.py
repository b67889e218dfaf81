"""The manifest the executor writes is the manifest the runner reads: the runner keeps its own,
standard-library-only copy of the model, so this test is what keeps the two in agreement."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from jobrunner import manifest as runner_manifest
from scheduler import keys
from scheduler.pipeline import manifests
from scheduler.pipeline.dispatch_models import RunSpec
from scheduler.runs.run_models import ConcurrencyPolicy

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class RecordingS3:
    """Presigns `<method>:<key>` and keeps what is put, as S3 would store it."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def generate_presigned_url(self, method: str, Params: dict[str, Any], ExpiresIn: int) -> str:
        return f"https://s3.test/{method}/{Params['Key']}?expires={ExpiresIn}"

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str) -> None:
        self.objects[Key] = Body


def test_every_run_the_scheduler_writes_is_one_the_runner_parses_whole() -> None:
    # Given a pack of two runs as the executor specifies them
    specs = [
        RunSpec(
            job_id=f"job{i}",
            run_key=f"1795000000-job{i}",
            attempt=i + 1,
            scheduled_at=1795000000,
            not_before=1795000000 + i,
            timeout_seconds=300,
            parameters={"n": i},
            script_key=keys.script_key("ab" * 32),
            overlap=overlap,
        )
        for i, overlap in enumerate([ConcurrencyPolicy.ALLOW, ConcurrencyPolicy.BUFFER_ONE])
    ]
    s3 = RecordingS3()

    # When the manifest is published and the runner parses the stored object
    store = manifests.Manifests(  # type: ignore[arg-type]
        s3, "bucket", 900, clock=lambda: NOW, started_report_seconds=10
    )
    store.publish("pack-1", specs)
    body = s3.objects[keys.manifest_key("pack-1")]
    parsed = runner_manifest.parse_manifest(body)
    assert parsed.started_report_seconds == 10

    # Then every run arrives, with every field the runner knows, and nothing it cannot read
    assert manifests.MANIFEST_VERSION == runner_manifest.MANIFEST_VERSION
    assert parsed.pack_id == "pack-1"
    assert parsed.invalid == []
    for spec, run in zip(specs, parsed.runs, strict=True):
        assert (run.job_id, run.run_key, run.attempt) == (spec.job_id, spec.run_key, spec.attempt)
        assert (run.scheduled_at, run.not_before) == (spec.scheduled_at, spec.not_before)
        assert run.timeout_seconds == spec.timeout_seconds
        assert run.parameters == spec.parameters
        assert f"/get_object/{spec.script_key}?" in run.script_url
        # the pack's claim of the run's second (PUT, GET), and the run's own claim
        pack_claim = keys.pack_claim_key("pack-1", spec.not_before)
        assert f"/put_object/{pack_claim}?" in str(run.claim_url)
        assert f"/get_object/{pack_claim}?" in str(run.claim_read_url)
        own_claim = keys.claim_key(spec.job_id, spec.run_key, spec.attempt)
        assert f"/put_object/{own_claim}?" in str(run.run_claim_url)
        assert keys.cancel_key(spec.job_id, spec.run_key, spec.attempt) in str(run.cancel_url)
        pack_cancel = keys.pack_cancel_key("pack-1", spec.not_before)
        assert f"/get_object/{pack_cancel}?" in str(run.pack_cancel_url)
        # the batches of finished reports of its pack claim: one key per run of the claim
        assert run.batch is not None
        batch_keys = [keys.batch_report_key("pack-1", spec.not_before, 0)]
        assert [url.split("?")[0] for url in parsed.batches[run.batch]] == [
            f"https://s3.test/put_object/{key}" for key in batch_keys
        ]
        assert run.overlap == spec.overlap.value
    allow, buffer_one = parsed.runs
    # one URL for the script both runs share, so the runner fetches it once
    assert allow.script_url == buffer_one.script_url
    assert allow.lock is None
    assert buffer_one.lock is not None
    assert f"/put_object/{keys.lock_key('job1')}?" in buffer_one.lock.take
    assert f"/delete_object/{keys.waiting_slot_key('job1')}?" in buffer_one.lock.release_wait
    entries = json.loads(body)["runs"]
    runner_fields = set(runner_manifest.RunSpec.__dataclass_fields__)
    assert set(entries[1]) == runner_fields
    assert set(entries[1]["lock"]) == set(runner_manifest.OverlapUrls.__dataclass_fields__)


def test_runs_of_one_claim_and_script_share_their_urls_whatever_their_timeouts() -> None:
    # Given a pack of two runs due in the same second, of one script, with different timeouts
    # (so their own URLs live for different times)
    specs = [
        RunSpec(
            job_id=f"job{i}",
            run_key=f"1796040060-job{i}",
            attempt=1,
            scheduled_at=1796040060,
            not_before=1796040060,  # a minute after NOW: a wait to cover too
            timeout_seconds=timeout,
            parameters={},
            script_key=keys.script_key("cd" * 32),
        )
        for i, timeout in enumerate([30, 3600])
    ]
    s3 = RecordingS3()

    # When the manifest is published
    manifests.Manifests(s3, "bucket", 900, clock=lambda: NOW).publish("pack-1", specs)  # type: ignore[arg-type]
    short, long = runner_manifest.parse_manifest(s3.objects[keys.manifest_key("pack-1")]).runs

    # Then what the runner does once per URL has one URL for both, living as long as the
    # longer run needs it (the runner PUTs the claim once, reads the mark and the script once)
    for name in ("claim_url", "claim_read_url", "pack_cancel_url", "script_url"):
        assert getattr(short, name) == getattr(long, name), name
        assert getattr(long, name).endswith(f"expires={900 + 3600 + 60}"), name
    # And each run's own URLs live as long as that run needs
    assert short.finished_url.endswith(f"expires={900 + 30 + 60}")


def test_the_manifest_url_is_short_lived_and_the_manifest_deletes_itself() -> None:
    # Given manifests whose own URL (the one in the RunTask overrides) lives 150 s, while the
    # runs' URLs live 900 s plus the run's wait and timeout
    s3 = RecordingS3()
    store = manifests.Manifests(  # type: ignore[arg-type]
        s3, "bucket", 900, clock=lambda: NOW, manifest_url_seconds=150
    )
    spec = RunSpec(
        job_id="job",
        run_key="1795000000-job",
        attempt=1,
        scheduled_at=1795000000,
        not_before=1795000000,
        timeout_seconds=300,
        parameters={},
        script_key=keys.script_key("ab" * 32),
        overlap=ConcurrencyPolicy.ALLOW,
    )

    # When a pack is published
    url = store.publish("pack-2", [spec])

    # Then the URL handed to the task expires with the task's start, and the manifest carries
    # the DELETE of itself that the runner calls once it has read it
    key = keys.manifest_key("pack-2")
    assert url == f"https://s3.test/get_object/{key}?expires=150"
    parsed = runner_manifest.parse_manifest(s3.objects[key])
    assert parsed.consume_url == f"https://s3.test/delete_object/{key}?expires=150"
    assert parsed.runs[0].script_url.endswith("?expires=1200")
