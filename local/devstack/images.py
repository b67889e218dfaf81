"""Docker for the local stack's `docker` dispatch backend and the container tests: the engine
(Debian's docker.io, installed and started when missing), a Debian bookworm base image built
with debootstrap from the Debian archive this machine already uses (no container registry is
reachable here), and the runner image built from runner/Dockerfile on that base.

Each image is tagged with a hash of its inputs, so a second call finds it and builds nothing.
The base's root file system is also kept as a tarball in the cache directory, outside the
clone (~/.cache/scheduler-images, or $SCHEDULER_IMAGE_CACHE): a fresh clone, or an engine whose
images were wiped, imports it in seconds instead of running debootstrap again (~2 min).

`python -m devstack image` runs `ensure_runner_image()` and prints the runner image's tag.
`make run` never comes here: the default dispatch backend needs no Docker.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devstack.template import ROOT

RUNNER_DIR = ROOT / "runner"
# Only what runner/Dockerfile copies counts towards the runner image's hash.
RUNNER_FILES = ("Dockerfile", ".dockerignore", "entrypoint.py", "jobrunner/**/*.py")
BASE_REPOSITORY = "scheduler-base"
RUNNER_REPOSITORY = "scheduler-runner"
# The recipe of the base: debootstrap's suite, variant and packages. Bookworm's Python is 3.11,
# the runtime the template's functions use; ca-certificates so that HTTPS to S3 verifies.
SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = ("python3", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BASE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
ENGINE_START_SECONDS = 60.0


class DockerUnavailable(RuntimeError):
    """No Docker engine answers here, and none could be installed or started."""


def cache_dir() -> Path:
    configured = os.environ.get("SCHEDULER_IMAGE_CACHE")
    path = Path(configured) if configured else Path.home() / ".cache" / "scheduler-images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _say(text: str) -> None:
    print(f"images: {text}", file=sys.stderr, flush=True)


def _run(
    command: list[str], env: dict[str, str] | None = None, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, text=True, capture_output=True, check=False, env=env, timeout=timeout
    )


def _checked(command: list[str], what: str, env: dict[str, str] | None = None) -> str:
    result = _run(command, env=env)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-2000:]
        raise DockerUnavailable(f"{what} failed ({result.returncode}): {detail}")
    return result.stdout


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder at a time on this machine (e.g. `make test` and a test run from another
    clone): the second waits, then finds the image built."""
    with (cache_dir() / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# -- the engine -------------------------------------------------------------------------------


def docker() -> str:
    """The docker client's path."""
    found = shutil.which("docker")
    if found is None:
        raise DockerUnavailable("no docker client on PATH")
    return found


def engine_ready() -> bool:
    """True when a Docker engine answers the client."""
    if shutil.which("docker") is None:
        return False
    try:
        result = _run([docker(), "info", "--format", "{{.ServerVersion}}"], timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0:
        raise DockerUnavailable(f"{', '.join(packages)} missing, and only root can install them")
    if shutil.which("apt-get") is None:
        raise DockerUnavailable(f"{', '.join(packages)} missing, and there is no apt-get")
    environment = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    _say(f"installing {' '.join(packages)} from Debian's packages ...")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
    if _run(install, env=environment).returncode != 0:  # stale or missing package lists
        _checked(["apt-get", "update", "-qq"], "apt-get update", env=environment)
        _checked(install, f"apt-get install {' '.join(packages)}", env=environment)


def ensure_engine() -> None:
    """Make a Docker engine answer: install Debian's docker.io when dockerd is missing, and
    start dockerd in the background (its log: <cache>/dockerd.log). Raises DockerUnavailable
    when that cannot be done (not root, no apt, the daemon does not come up)."""
    if engine_ready():
        return
    with _locked("engine"):
        if engine_ready():
            return
        started = time.monotonic()
        if shutil.which("dockerd") is None or shutil.which("docker") is None:
            _apt_install("docker.io")
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise DockerUnavailable("docker.io is installed but dockerd is not on PATH")
        if os.geteuid() != 0:
            raise DockerUnavailable("no Docker engine answers, and only root can start dockerd")
        log_path = cache_dir() / "dockerd.log"
        _say(f"starting dockerd (log: {log_path}) ...")
        with log_path.open("ab") as log:
            daemon = subprocess.Popen(
                [dockerd],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a system daemon: it outlives this process
            )
        deadline = time.monotonic() + ENGINE_START_SECONDS
        while not engine_ready():
            if daemon.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise DockerUnavailable(f"dockerd did not come up:\n{tail}")
            time.sleep(0.5)
        _say(f"Docker engine ready in {time.monotonic() - started:.1f} s")


def image_exists(tag: str) -> bool:
    return _run([docker(), "image", "inspect", tag]).returncode == 0


# -- the base: Debian bookworm with Python 3.11, from the machine's own Debian archive --------


def debian_mirror(apt: Path = Path("/etc/apt")) -> str:
    """The Debian archive apt uses here (deb822 .sources files or sources.list), so that the
    base comes from where this machine's packages come from."""
    files = sorted((apt / "sources.list.d").glob("*.sources")) if apt.exists() else []
    for path in files:
        for stanza in path.read_text(errors="replace").split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if ":" in line and line[0] != "#"
            )
            uris = fields.get("URIs", "").split()
            suites = fields.get("Suites", "").split()
            if SUITE in suites and "deb" in fields.get("Types", "").split():
                for uri in uris:
                    if uri.rstrip("/").endswith("/debian"):
                        return uri.rstrip("/")
    lists = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            words = line.split()  # deb [options] URI SUITE COMPONENT...
            at = next((i for i, word in enumerate(words) if "://" in word), len(words))
            if words[:1] != ["deb"] or at + 1 >= len(words):
                continue
            uri = words[at].rstrip("/")
            if words[at + 1] == SUITE and uri.endswith("/debian"):
                return uri
    return DEFAULT_MIRROR


def _architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def base_recipe() -> dict[str, object]:
    return {
        "suite": SUITE,
        "variant": VARIANT,
        "packages": list(PACKAGES),
        "mirror": debian_mirror(),
        "architecture": _architecture(),
        "env": list(BASE_ENV),
    }


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def base_tag() -> str:
    recipe = json.dumps(base_recipe(), sort_keys=True).encode()
    return f"{BASE_REPOSITORY}:{_digest(recipe)}"


def _debootstrap(tarball: Path) -> None:
    """debootstrap --variant=minbase --include=python3,... bookworm into a scratch directory of
    the cache, then a tarball of it (apt's downloaded .debs left out)."""
    if shutil.which("debootstrap") is None:
        _apt_install("debootstrap")
    recipe = base_recipe()
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="rootfs-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        started = time.monotonic()
        _say(f"debootstrap {SUITE} from {recipe['mirror']} (about 2 minutes, once) ...")
        _checked(
            [
                "debootstrap",
                f"--variant={VARIANT}",
                f"--include={','.join(PACKAGES)}",
                f"--arch={recipe['architecture']}",
                SUITE,
                str(rootfs),
                str(recipe["mirror"]),
            ],
            "debootstrap",
        )
        for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial")
        _checked(["tar", "-C", str(rootfs), "-cf", str(partial), "."], "tar of the base")
        partial.rename(tarball)
        _say(f"base root file system in {time.monotonic() - started:.0f} s: {tarball}")


def ensure_base_image() -> str:
    """The Debian bookworm base image (python3 at /usr/bin/python3); built once, then found."""
    tag = base_tag()
    if image_exists(tag):
        return tag
    with _locked("base"):
        if image_exists(tag):
            return tag
        tarball = cache_dir() / f"{tag.replace(':', '-')}.tar"
        if not tarball.exists():
            _debootstrap(tarball)
        changes = [argument for env in BASE_ENV for argument in ("--change", f"ENV {env}")]
        _checked([docker(), "import", *changes, str(tarball), tag], "docker import")
        _say(f"imported {tag}")
    return tag


# -- the runner image: runner/Dockerfile on the base ------------------------------------------


def runner_inputs(runner_dir: Path = RUNNER_DIR) -> list[Path]:
    """The files of runner/ that the image is built from."""
    files = {
        path
        for pattern in RUNNER_FILES
        for path in runner_dir.glob(pattern)
        if path.is_file() and "__pycache__" not in path.parts
    }
    return sorted(files)


def runner_tag(base: str, runner_dir: Path = RUNNER_DIR) -> str:
    """The runner image's tag: a hash of the base's tag and of every file the image copies."""
    parts = [base.encode()]
    for path in runner_inputs(runner_dir):
        parts += [str(path.relative_to(runner_dir)).encode(), path.read_bytes()]
    return f"{RUNNER_REPOSITORY}:{_digest(*parts)}"


def build_runner_image(base: str, tag: str) -> None:
    """`docker build` of runner/Dockerfile with BASE_IMAGE=base (the classic builder: no
    BuildKit plugin is needed, and nothing is pulled when the base is local)."""
    started = time.monotonic()
    _checked(
        [docker(), "build", "--build-arg", f"BASE_IMAGE={base}", "-t", tag, str(RUNNER_DIR)],
        "docker build of runner/Dockerfile",
        env=os.environ | {"DOCKER_BUILDKIT": "0"},
    )
    _say(f"built {tag} from runner/Dockerfile in {time.monotonic() - started:.1f} s")


def ensure_runner_image() -> str:
    """Docker running, the base image and the runner image built (each only when its inputs
    changed); returns the runner image's tag."""
    ensure_engine()
    base = ensure_base_image()
    tag = runner_tag(base)
    if image_exists(tag):
        return tag
    with _locked("runner"):
        if not image_exists(tag):
            build_runner_image(base, tag)
    return tag


# -- the base for `sam local --invoke-image`: the Lambda runtime interface on the Debian base --

LAMBDA_BASE_DIR = ROOT / "local" / "lambda-base"
LAMBDA_BASE_REPOSITORY = "scheduler-lambda-base"
_PIP_PLATFORMS = {"amd64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}


def lambda_base_tag(base: str) -> str:
    """A hash of the Debian base's tag, the architecture and local/lambda-base/'s files."""
    parts = [base.encode(), _architecture().encode()]
    for path in sorted(LAMBDA_BASE_DIR.iterdir()):
        if path.is_file():
            parts += [path.name.encode(), path.read_bytes()]
    return f"{LAMBDA_BASE_REPOSITORY}:{_digest(*parts)}"


def build_lambda_base_image(base: str, tag: str) -> None:
    """local/lambda-base/Dockerfile on the Debian base, with the runtime interface client's
    pinned wheels installed into the build context on the host (pip in `docker build` would
    need the network)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="lambda-base-") as scratch:
        context = Path(scratch)
        for name in ("Dockerfile", "bootstrap"):
            shutil.copy2(LAMBDA_BASE_DIR / name, context / name)
        _checked(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-compile",
                "--target",
                str(context / "runtime"),
                "--only-binary=:all:",
                "--platform",
                _PIP_PLATFORMS.get(_architecture(), f"manylinux2014_{platform.machine()}"),
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                "-r",
                str(LAMBDA_BASE_DIR / "requirements.txt"),
            ],
            "pip install of the runtime interface client",
        )
        _checked(
            [docker(), "build", "--build-arg", f"BASE_IMAGE={base}", "-t", tag, str(context)],
            "docker build of local/lambda-base/Dockerfile",
            env=os.environ | {"DOCKER_BUILDKIT": "0"},
        )
    _say(f"built {tag} in {time.monotonic() - started:.1f} s")


def ensure_lambda_base_image() -> str:
    """Docker running, the Debian base and the base for `sam local --invoke-image` built (each
    only when its inputs changed); returns the latter's tag (REPOSITORY:TAG, one colon, as
    --invoke-image wants)."""
    ensure_engine()
    base = ensure_base_image()
    tag = lambda_base_tag(base)
    if image_exists(tag):
        return tag
    with _locked("lambda-base"):
        if not image_exists(tag):
            build_lambda_base_image(base, tag)
    return tag
