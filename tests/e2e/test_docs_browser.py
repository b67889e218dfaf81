"""/docs renders Swagger UI in a real browser with no internet: headless Chromium may reach the
local stack only, so every script and style must come from the page itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from e2e.conftest import LocalStack

pytestmark = pytest.mark.e2e


def chromium() -> str | None:
    for candidate in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(candidate)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def test_docs_render_offline_in_chromium(local_stack: LocalStack, tmp_path: Path) -> None:
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed; `make docs-check` installs it and runs this test")
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # No name resolves, and no proxy: the page can load nothing from the internet.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--no-proxy-server",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        f"{local_stack.url}/docs",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'class="swagger-ui' in dom, dom[:2000] or result.stderr[-2000:]
    # Rendered operations, not the "Loading..." placeholder: the spec was read and laid out.
    assert "opblock" in dom
    assert "/jobs/{job_id}" in dom
    assert "List your jobs, newest first" in dom
