"""The local image builder's keys (local/devstack/images.py): what the base comes from, and
which files make the runner image's tag change. No Docker needed."""

from __future__ import annotations

import shutil
from pathlib import Path

from devstack import images

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_the_base_comes_from_the_debian_archive_apt_uses(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert images.debian_mirror(tmp_path) == "http://deb.debian.org/debian"


def test_a_one_line_sources_list_is_read_too(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# a comment\ndeb [arch=amd64] http://mirror.example/debian/ bookworm main\n"
    )
    assert images.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_without_sources_the_default_archive_is_used(tmp_path: Path) -> None:
    assert images.debian_mirror(tmp_path) == images.DEFAULT_MIRROR


def test_the_runner_tag_follows_the_files_the_image_copies(tmp_path: Path) -> None:
    runner = tmp_path / "runner"
    shutil.copytree(images.RUNNER_DIR, runner, ignore=shutil.ignore_patterns("__pycache__"))
    tag = images.runner_tag("base:1", runner)
    assert tag.startswith(f"{images.RUNNER_REPOSITORY}:")
    assert images.runner_tag("base:1", runner) == tag
    assert images.runner_tag("base:2", runner) != tag

    # Bytecode and the README are not in the image: they leave the tag alone.
    (runner / "jobrunner" / "__pycache__").mkdir()
    (runner / "jobrunner" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    (runner / "README.md").write_text("changed")
    assert images.runner_tag("base:1", runner) == tag

    (runner / "jobrunner" / "main.py").write_text("# changed\n")
    assert images.runner_tag("base:1", runner) != tag
    names = {str(path.relative_to(runner)) for path in images.runner_inputs(runner)}
    assert {"Dockerfile", ".dockerignore", "entrypoint.py", "jobrunner/main.py"} <= names
