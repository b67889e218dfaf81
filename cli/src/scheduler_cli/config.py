"""Profiles: an API URL and where its token comes from, kept in the config directory.

The directory is `$SCHEDULER_CONFIG_DIR`, else `$XDG_CONFIG_HOME/scheduler`, else
`~/.config/scheduler` (mode 0700). `config.json` holds the profiles and the current one;
`credentials.json` holds tokens given to `login` as such. Both are written 0600, atomically.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scheduler_cli.exit_codes import CliError, ExitCode

CONFIG_FILE = "config.json"
CREDENTIALS_FILE = "credentials.json"
TOKEN_COMMAND_TIMEOUT = 60.0


def config_dir() -> Path:
    explicit = os.environ.get("SCHEDULER_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "scheduler"


def default_profile_name(url: str) -> str:
    """A profile per API URL: named after its host (and port) unless named otherwise."""
    return urlsplit(url).netloc or url


@dataclass
class Profile:
    url: str
    token_command: str | None = None  # run by /bin/sh; the token is its last line of stdout
    token_env: str | None = None  # the name of an environment variable holding the token
    token_file: str | None = None  # a file holding the token
    # else the token stored in credentials.json by `login`

    def token_source(self) -> str:
        if self.token_command:
            return f"command: {self.token_command}"
        if self.token_env:
            return f"env: ${self.token_env}"
        if self.token_file:
            return f"file: {self.token_file}"
        return "stored"


@dataclass
class Config:
    current: str | None = None
    profiles: dict[str, Profile] = field(default_factory=dict)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}", ExitCode.USAGE) from None
    if not isinstance(data, dict):
        raise CliError(f"{path} does not hold a JSON object", ExitCode.USAGE)
    return data


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write JSON readable by its owner alone (0600), in a 0700 directory, atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.write("\n")
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def load() -> Config:
    data = _read_json(config_dir() / CONFIG_FILE)
    profiles = {}
    for name, entry in (data.get("profiles") or {}).items():
        known = {key: entry[key] for key in Profile.__dataclass_fields__ if key in entry}
        if "url" not in known:
            raise CliError(
                f"profile {name!r} in {config_dir() / CONFIG_FILE} has no url", ExitCode.USAGE
            )
        profiles[name] = Profile(**known)
    return Config(current=data.get("current"), profiles=profiles)


def save(config: Config) -> None:
    profiles = {
        name: {key: value for key, value in asdict(profile).items() if value is not None}
        for name, profile in sorted(config.profiles.items())
    }
    _write_private(config_dir() / CONFIG_FILE, {"current": config.current, "profiles": profiles})


def stored_tokens() -> dict[str, str]:
    return {
        str(name): str(token)
        for name, token in _read_json(config_dir() / CREDENTIALS_FILE).items()
        if isinstance(token, str)
    }


def store_token(profile: str, token: str | None) -> None:
    """Keep (or with None forget) the token of a profile in credentials.json."""
    tokens = stored_tokens()
    if token is None:
        if profile not in tokens:
            return
        del tokens[profile]
    else:
        tokens[profile] = token
    _write_private(config_dir() / CREDENTIALS_FILE, tokens)


def run_token_command(command: str) -> str:
    """The last non-empty line the command prints (as `make -s token | tail -1` would)."""
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=TOKEN_COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CliError(
            f"the token command did not finish within {TOKEN_COMMAND_TIMEOUT:.0f} s: {command}",
            ExitCode.AUTH,
        ) from None
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        reason = done.stderr.strip().splitlines()[-1:] or ["it printed nothing"]
        raise CliError(
            f"the token command failed (exit {done.returncode}): {command}: {reason[0]}",
            ExitCode.AUTH,
        )
    return lines[-1]


def resolve_token(name: str, profile: Profile) -> str:
    """The profile's token from its source: a command, an environment variable, a file, or
    the one `login` stored."""
    if profile.token_command:
        return run_token_command(profile.token_command)
    if profile.token_env:
        token = os.environ.get(profile.token_env, "").strip()
        if not token:
            raise CliError(
                f"profile {name!r} takes its token from ${profile.token_env}, which is not set",
                ExitCode.AUTH,
            )
        return token
    if profile.token_file:
        path = Path(profile.token_file).expanduser()
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read the token file {path}: {exc}", ExitCode.AUTH) from None
        if not token:
            raise CliError(f"the token file {path} is empty", ExitCode.AUTH)
        return token
    stored = stored_tokens().get(name)
    if not stored:
        raise CliError(
            f"no token for profile {name!r}: run `scheduler login {profile.url}`", ExitCode.AUTH
        )
    return stored


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (the API verifies them): for showing who one is."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}
