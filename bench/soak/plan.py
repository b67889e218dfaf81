"""The fault plan: every fault the soak will inject, drawn from a seed before the soak starts.

Each kind has its own random stream (seed and kind name), so the same seed and rates give the
same plan, and changing one kind's rate leaves the others' faults where they were. Arrivals are
a Poisson process at the kind's rate per minute; each fault's parameters come from the same
stream. The plan is written into the results, and the AWS-error windows are handed to the
stack's botocore hook (faulty_stack.py) as a file.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# kind -> what it does. Kills restart the stack (or nothing, for a runner) as Lambda would retry.
KINDS: dict[str, str] = {
    "kill_watcher": "SIGKILL the stack process during a watcher tick, restart it",
    "kill_executor": "SIGKILL the stack process while the executor dispatches a tick's runs",
    "kill_pollers": "SIGKILL the stack process while the pollers feed the minute's reports",
    "kill_runner": "SIGKILL a runner task (with its scripts still running)",
    "aws_error": "a window of throttling / 500s / timeouts on DynamoDB, SQS, S3 or RunTask",
    "drop_notification": "an S3 event notification (reports queue message) dropped",
    "duplicate_delivery": "an SQS message (dispatch or reports queue) delivered twice",
    "skip_tick": "a watcher tick skipped",
    "late_runner": "a runner frozen (SIGSTOP) just before its run's second, resumed later",
}
DEFAULT_RATES: dict[str, float] = {
    "kill_watcher": 0.1,
    "kill_executor": 0.1,
    "kill_pollers": 0.1,
    "kill_runner": 0.5,
    "aws_error": 1.0,
    "drop_notification": 0.5,
    "duplicate_delivery": 0.5,
    "skip_tick": 0.15,
    "late_runner": 0.3,
}
# The quick soak lasts 1 minute: rates high enough for kinds to show up (each at least once).
QUICK_RATES: dict[str, float] = {
    kind: 0.5 if kind.startswith("kill_") and kind != "kill_runner" else max(1.0, 2 * rate)
    for kind, rate in DEFAULT_RATES.items()
}
AWS_SERVICES = ("dynamodb", "sqs", "s3", "ecs")  # ecs: RunTask (the local backend's dispatch)
AWS_ERRORS = ("throttle", "server_error", "timeout")


@dataclass(frozen=True)
class Fault:
    at: float  # seconds from the soak's start
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    seed: int
    rates: dict[str, float]
    duration_s: float
    tick_second: int
    faults: list[Fault]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        faults = [Fault(**fault) for fault in data["faults"]]
        return cls(data["seed"], data["rates"], data["duration_s"], data["tick_second"], faults)

    def aws_windows(self) -> list[dict[str, Any]]:
        """The AWS-error windows, as the stack's hook reads them."""
        return [
            {"start": f.at, "end": f.at + f.params["seconds"], **f.params}
            for f in self.faults
            if f.kind == "aws_error"
        ]

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    def counts(self) -> dict[str, int]:
        return {kind: sum(f.kind == kind for f in self.faults) for kind in self.rates}


def _params(kind: str, rng: random.Random) -> dict[str, Any]:
    if kind.startswith("kill_") and kind != "kill_runner":
        return {"restart_after_s": round(rng.uniform(1, 8), 1), "offset_s": rng.uniform(0.2, 4)}
    if kind == "kill_runner":
        return {"pick": rng.random()}
    if kind == "aws_error":
        return {
            "service": rng.choice(AWS_SERVICES),
            "error": rng.choice(AWS_ERRORS),
            # Work comes in bursts (ticks, minute boundaries): windows long enough to meet one.
            "seconds": round(rng.uniform(5, 30), 1),
            "probability": round(rng.uniform(0.2, 0.8), 2),
        }
    if kind == "duplicate_delivery":
        return {"queue": rng.choice(("dispatch", "reports"))}
    if kind == "late_runner":
        return {"late_s": round(rng.uniform(10, 45), 1), "pick": rng.random()}
    return {}


def generate(seed: int, rates: dict[str, float], duration_s: float) -> Plan:
    """Every fault of a soak whose faults last `duration_s` seconds."""
    faults: list[Fault] = []
    for kind in sorted(rates):
        rate = rates[kind]
        rng = random.Random(f"{seed}:{kind}")
        at = 0.0
        arrivals = 0
        while rate > 0:
            at += rng.expovariate(rate / 60)
            if at >= duration_s:
                break
            faults.append(Fault(round(at, 2), kind, _params(kind, rng)))
            arrivals += 1
        if rate > 0 and arrivals == 0:  # every kind enabled happens at least once
            faults.append(Fault(round(rng.uniform(0, duration_s), 2), kind, _params(kind, rng)))
    tick_second = random.Random(f"{seed}:tick").randrange(60)
    ordered = sorted(faults, key=lambda f: (f.at, f.kind))
    return Plan(seed, dict(rates), duration_s, tick_second, ordered)


def parse_rates(assignments: list[str], defaults: dict[str, float]) -> dict[str, float]:
    """`KIND=PER_MINUTE` over the defaults; `all=0` turns every kind off first."""
    rates = dict(defaults)
    for text in assignments:
        kind, _, value = text.partition("=")
        if kind == "all":
            rates = dict.fromkeys(rates, float(value))
        elif kind in KINDS:
            rates[kind] = float(value)
        else:
            raise ValueError(f"unknown fault kind {kind!r}: one of {', '.join(KINDS)}")
    return rates
