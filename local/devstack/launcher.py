"""Start `python -m devstack run` as a subprocess: what the e2e tests and the benchmarks do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO

from devstack.template import ROOT

PYTHONPATH = os.pathsep.join(str(ROOT / part) for part in ("layers/common/python", "local"))


def environment() -> dict[str, str]:
    """This process's environment without AWS or devstack settings, so that the stack can
    only reach the moto server it is told about."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DEVSTACK_"))}
    return inherited | {"PYTHONPATH": PYTHONPATH, "PYTHONUNBUFFERED": "1"}


def spawn(
    state_dir: Path, api_port: int, *arguments: str, log: IO[bytes], new_session: bool = False
) -> subprocess.Popen[bytes]:
    """`python -m devstack run --api-port P --state-dir D ARGUMENTS...`, its output to `log`."""
    command = [sys.executable, "-m", "devstack", "run", "--api-port", str(api_port)]
    return subprocess.Popen(
        [*command, "--state-dir", str(state_dir), *arguments],
        cwd=ROOT,
        env=environment(),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=new_session,
    )
