"""`make deploy`: the runner image and the stack in one command.

1. `docker build` of runner/ for the stack's architecture, tagged with the commit;
2. the image is refused unless it holds the runner (its entrypoint is `python3
   /app/entrypoint.py` and its file system has /app/jobrunner/main.py), so that no stack is
   deployed whose every run would fail;
3. `docker push` to ECR (after `aws ecr get-login-password | docker login`);
4. `sam build` and `sam deploy` of the samconfig.toml environment, its parameter overrides
   kept and RunnerImageUri (the pushed digest) and Architecture added.

With `--dry-run` it prints the commands and runs none (no AWS account is reachable from the
development machines). Needs Docker, the AWS CLI and credentials for the account otherwise.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tarfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from devstack.template import ROOT

RUNNER_ENTRYPOINT = ["python3", "/app/entrypoint.py"]
RUNNER_MAIN = "app/jobrunner/main.py"


class DeployError(RuntimeError):
    """A step failed or the image does not hold the runner."""


def config_overrides(config_env: str, samconfig: Path = ROOT / "samconfig.toml") -> list[str]:
    """The parameter overrides samconfig.toml gives `sam deploy` in this environment."""
    document = tomllib.loads(samconfig.read_text())
    parameters = document.get(config_env, {}).get("deploy", {}).get("parameters", {})
    overrides = parameters.get("parameter_overrides", [])
    return list(overrides) if isinstance(overrides, list) else shlex.split(str(overrides))


def merged_overrides(overrides: list[str], **extra: str) -> list[str]:
    """`overrides` (KEY=VALUE) with `extra` replacing or adding keys: the command line's
    --parameter-overrides replaces samconfig.toml's whole list, so the deploy passes both."""
    kept = [item for item in overrides if item.split("=", 1)[0] not in extra]
    return kept + [f"{key}={value}" for key, value in extra.items()]


def holds_the_runner(entrypoint: list[str] | None, exported: Path) -> bool:
    """True if the image's entrypoint starts the runner and its file system holds it."""
    if entrypoint != RUNNER_ENTRYPOINT:
        return False
    with tarfile.open(exported) as archive:
        return any(name.lstrip("./") == RUNNER_MAIN for name in archive.getnames())


@dataclass
class Deploy:
    ecr_repo: str
    config_env: str = "default"
    architecture: str = "arm64"
    dry_run: bool = False
    sam: str = "sam"
    commands: list[str] = field(default_factory=list)

    @property
    def platform(self) -> str:
        return "linux/amd64" if self.architecture == "x86_64" else "linux/arm64"

    def run(self, command: list[str], *, stdin: str | None = None, quiet: bool = False) -> str:
        """Print the command, run it (unless a dry run) and return its output; `quiet`: the
        output is a secret and never printed."""
        text = shlex.join(command)
        print(f"+ {text}{' < (the password above)' if stdin is not None else ''}", flush=True)
        self.commands.append(text)
        if self.dry_run:
            return ""
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        result = subprocess.run(
            command,
            input=stdin,
            cwd=ROOT,
            env=os.environ | {"PATH": path},
            text=True,
            stdout=subprocess.PIPE,
            check=False,
        )
        if result.returncode != 0:
            raise DeployError(f"{text}: exit {result.returncode}")
        if not quiet and result.stdout:
            print(result.stdout, end="" if result.stdout.endswith("\n") else "\n")
        return result.stdout.strip()

    def check_image(self, image: str) -> None:
        entrypoint_json = self.run(
            ["docker", "image", "inspect", "--format", "{{json .Config.Entrypoint}}", image]
        )
        if not self.dry_run and json.loads(entrypoint_json or "null") != RUNNER_ENTRYPOINT:
            raise DeployError(f"{image}'s entrypoint does not start the runner: refusing it")
        container = self.run(["docker", "create", "--platform", self.platform, image])
        exported = ROOT / ".aws-sam" / "runner-image.tar"
        exported.parent.mkdir(exist_ok=True)
        self.run(["docker", "export", "--output", str(exported), container or "<container>"])
        self.run(["docker", "rm", container or "<container>"])
        if self.dry_run:
            print("  (refuses the image unless its entrypoint is python3 /app/entrypoint.py")
            print(f"   and its file system holds {RUNNER_MAIN})")
            return
        try:
            if not holds_the_runner(json.loads(entrypoint_json), exported):
                raise DeployError(f"{image} does not hold the runner: refusing to deploy it")
        finally:
            exported.unlink(missing_ok=True)

    def __call__(self, tag: str) -> None:
        image = f"{self.ecr_repo}:{tag}"
        registry = self.ecr_repo.split("/", 1)[0]
        region = registry.split(".")[3] if registry.count(".") >= 4 else "us-east-1"
        self.run(["docker", "build", "--platform", self.platform, "-t", image, "runner"])
        self.check_image(image)
        password = self.run(["aws", "ecr", "get-login-password", "--region", region], quiet=True)
        login = ["docker", "login", "--username", "AWS", "--password-stdin", registry]
        self.run(login, stdin=password, quiet=True)
        self.run(["docker", "push", image])
        digest = self.run(
            ["docker", "image", "inspect", "--format", "{{index .RepoDigests 0}}", image]
        )
        overrides = merged_overrides(
            config_overrides(self.config_env),
            RunnerImageUri=digest or f"{self.ecr_repo}@sha256:<pushed digest>",
            Architecture=self.architecture,
        )
        layer_arch = "x86_64" if self.architecture == "x86_64" else "aarch64"
        self.run(
            [
                "env",
                f"LAYER_ARCH={layer_arch}",
                self.sam,
                "build",
                "--config-env",
                self.config_env,
                "--parameter-overrides",
                f"Architecture={self.architecture}",
            ]
        )
        self.run(
            [
                self.sam,
                "deploy",
                "--config-env",
                self.config_env,
                "--parameter-overrides",
                *overrides,
            ]
        )


def main(ecr_repo: str, config_env: str, architecture: str, dry_run: bool) -> int:
    tag = (
        subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        or "latest"
    )
    sam = str(Path(sys.executable).parent / "sam")
    try:
        Deploy(ecr_repo, config_env, architecture, dry_run, sam)(tag)
    except DeployError as error:
        print(f"deploy: {error}", file=sys.stderr)
        return 1
    return 0
