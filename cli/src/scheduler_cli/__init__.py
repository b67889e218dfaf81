"""`scheduler`: the command-line client of the job scheduler's HTTP API (docs/cli.md)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scheduler-cli")
except PackageNotFoundError:  # imported from a source tree, not installed
    __version__ = "0.0.0"
