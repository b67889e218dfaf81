"""The manifest of a pack: the runner's own, standard-library-only copy of the manifest model.

The scheduler writes it (``RUNS_MANIFEST_URL``); the runner only reads version 1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

MANIFEST_VERSION: Final = 1


def _field(raw: Mapping[str, Any], name: str, kind: type, default: Any = None) -> Any:
    value = raw.get(name, default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"run field {name!r} missing or not {kind.__name__}")
    return value


OVERLAP_POLICIES: Final = frozenset({"ALLOW", "FORBID", "BUFFER_ONE", "REPLACE"})


def _optional_text(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class OverlapUrls:
    """Presigned URLs of a job's lock object (held by the run whose script is running) and of
    its waiting slot (the one run allowed to wait for it), and of the run's "waiting" report."""

    take: str  # conditional PUT (If-None-Match: *) of the lock
    read: str  # GET of the lock
    release: str  # DELETE of the lock
    wait: str  # PUT of the waiting slot (conditional for BUFFER_ONE: one waits, at most)
    read_wait: str
    release_wait: str
    waiting_report: str  # PUT reports/.../waiting.json: the run waits, and for whom

    @classmethod
    def parse(cls, raw: object) -> OverlapUrls:
        if not isinstance(raw, dict):
            raise ValueError("lock is not an object")
        return cls(**{name: _field(raw, name, str) for name in cls.__dataclass_fields__})


# Deliberately a second copy of scheduler.pipeline.dispatch_models.RunSpec and of what
# scheduler.pipeline.manifests writes: the runner image holds the standard library only.
# tests/unit/test_manifest_agreement.py keeps the two in agreement.
@dataclass(frozen=True)
class RunSpec:
    job_id: str
    run_key: str
    attempt: int
    scheduled_at: int
    not_before: int
    timeout_seconds: int
    parameters: Any
    script_url: str = field(repr=False)
    started_url: str = field(repr=False)
    finished_url: str = field(repr=False)
    output_url: str = field(repr=False)
    # Conditional PUT (If-None-Match: *) of the claim of the runs of this run's pack that start
    # in its second: the task that makes it starts them, no other (optional; see claims.py).
    claim_url: str | None = field(default=None, repr=False)
    # GET of that pack claim (which runs its winner holds), and the conditional PUT of this
    # run's own claim, taken only when the pack claim's winner does not hold this run.
    claim_read_url: str | None = field(default=None, repr=False)
    run_claim_url: str | None = field(default=None, repr=False)
    # GET of the attempt's cancel object, polled while the script runs (optional).
    cancel_url: str | None = field(default=None, repr=False)
    # GET of its pack claim's cancel mark, read at the second (once for the claim's runs): the
    # run's own cancel object is read then only if the mark is there (optional).
    pack_cancel_url: str | None = field(default=None, repr=False)
    # The pack claim whose batches of finished reports may carry this run's (Manifest.batches).
    batch: str | None = None
    # The job's overlap policy; for all but ALLOW, the URLs of the job's lock (see overlap.py).
    overlap: str = "ALLOW"
    lock: OverlapUrls | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, raw: object) -> RunSpec:
        if not isinstance(raw, dict):
            raise ValueError("run entry is not an object")
        scheduled_at = _field(raw, "scheduled_at", int)
        spec = cls(
            job_id=_field(raw, "job_id", str),
            run_key=_field(raw, "run_key", str),
            attempt=_field(raw, "attempt", int, 1),
            scheduled_at=scheduled_at,
            not_before=_field(raw, "not_before", int, scheduled_at),
            timeout_seconds=_field(raw, "timeout_seconds", int),
            parameters=raw.get("parameters") or {},
            script_url=_field(raw, "script_url", str),
            started_url=_field(raw, "started_url", str),
            finished_url=_field(raw, "finished_url", str),
            output_url=_field(raw, "output_url", str),
            claim_url=_optional_text(raw, "claim_url"),
            claim_read_url=_optional_text(raw, "claim_read_url"),
            run_claim_url=_optional_text(raw, "run_claim_url"),
            cancel_url=_optional_text(raw, "cancel_url"),
            pack_cancel_url=_optional_text(raw, "pack_cancel_url"),
            batch=_optional_text(raw, "batch"),
            overlap=_field(raw, "overlap", str, "ALLOW"),
            lock=OverlapUrls.parse(raw["lock"]) if raw.get("lock") is not None else None,
        )
        if spec.overlap not in OVERLAP_POLICIES:
            raise ValueError(f"unknown overlap policy {spec.overlap!r}")
        if spec.overlap != "ALLOW" and spec.lock is None:
            raise ValueError(f"overlap policy {spec.overlap} without the job's lock URLs")
        if spec.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        return spec

    @property
    def ids(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "run_key": self.run_key, "attempt": self.attempt}


@dataclass(frozen=True)
class Manifest:
    pack_id: str
    runs: list[RunSpec]
    invalid: list[dict[str, Any]]
    # Presigned DELETE of the manifest itself: called once it is read, so that the GET URL in
    # the task's overrides (visible in DescribeTasks and the task's events) leads nowhere.
    consume_url: str | None = field(default=None, repr=False)
    # A run still running this long after its start reports "started" (RUNNING); a shorter one
    # goes straight to its finished report, which carries its start. None: at once.
    started_report_seconds: float | None = None
    # Per pack claim (RunSpec.batch): conditional PUTs of batches of finished reports, in turn.
    batches: dict[str, list[str]] = field(default_factory=dict, repr=False)


def _batches(raw: object) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        return {}
    return {
        str(name): [url for url in urls if isinstance(url, str)]
        for name, urls in raw.items()
        if isinstance(urls, list)
    }


def parse_manifest(body: bytes) -> Manifest:
    """Valid runs, plus the entries that could not be parsed (reported FAILED where possible)."""
    document = json.loads(body)
    if not isinstance(document, dict) or document.get("version") != MANIFEST_VERSION:
        raise ValueError("manifest is not a version 1 object")
    entries = document.get("runs")
    if not isinstance(entries, list):
        raise ValueError("manifest has no runs list")
    runs: list[RunSpec] = []
    invalid: list[dict[str, Any]] = []
    for entry in entries:
        try:
            runs.append(RunSpec.parse(entry))
        except ValueError as exc:
            invalid.append({"entry": entry if isinstance(entry, dict) else {}, "error": str(exc)})
    consume_url = document.get("consume_url")
    after = document.get("started_report_seconds")
    return Manifest(
        pack_id=str(document.get("pack_id", "")),
        runs=runs,
        invalid=invalid,
        consume_url=consume_url if isinstance(consume_url, str) else None,
        batches=_batches(document.get("batches")),
        started_report_seconds=float(after)
        if isinstance(after, int | float) and not isinstance(after, bool) and after >= 0
        else None,
    )
