"""HTTP GET and PUT through presigned URLs, with retries of transient failures.

The URLs carry their own authorisation: they are never logged, and no error message holds one.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from jobrunner.config import HTTP_TIMEOUT_SECONDS, RETRY_DELAYS, TRANSIENT_HTTP


class TransferError(Exception):
    """A GET or PUT that failed for good (message never contains the URL)."""


def _check_scheme(url: str, allowed: tuple[str, ...]) -> None:
    scheme = url.split(":", 1)[0].lower()
    if scheme not in allowed:
        raise TransferError(f"unsupported URL scheme {scheme!r}")


def _read_capped(response: Any, limit: int) -> bytes:
    body: bytes = response.read(limit + 1)
    if len(body) > limit:
        raise TransferError(f"response larger than {limit} bytes")
    return body


def http_get(url: str, limit: int) -> bytes:
    _check_scheme(url, ("https", "http", "file"))
    return _with_retries(lambda: _request("GET", url, None, None, limit))


def http_put(url: str, body: bytes, content_type: str) -> None:
    _check_scheme(url, ("https", "http"))
    _with_retries(lambda: _request("PUT", url, body, content_type, 1024 * 1024))


def http_put_if_absent(url: str, body: bytes) -> bool:
    """PUT only if the object does not exist yet (S3 conditional write). False if it did."""
    _check_scheme(url, ("https", "http"))
    try:
        _with_retries(
            lambda: _request(
                "PUT", url, body, "application/json", 1024 * 1024, {"If-None-Match": "*"}
            )
        )
    except TransferError as exc:
        if str(exc) == "HTTP 412":
            return False
        raise
    return True


def http_delete(url: str) -> None:
    _check_scheme(url, ("https", "http"))
    _with_retries(lambda: _request("DELETE", url, None, None, 1024 * 1024))


def http_get_if_present(url: str, limit: int) -> bytes | None:
    """One GET, no retries: the object, or None if it is not there (S3 answers 404, or 403
    when the signer may not list the bucket). For polls: the next poll is the retry."""
    _check_scheme(url, ("https", "http"))
    try:
        return _request("GET", url, None, None, limit)
    except urllib.error.HTTPError as exc:
        if exc.code in (403, 404):
            return None
        raise TransferError(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        raise TransferError(f"{type(exc).__name__}") from None
    except OSError as exc:
        raise TransferError(f"{type(exc).__name__}") from None


def _request(
    method: str,
    url: str,
    body: bytes | None,
    content_type: str | None,
    limit: int,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 (scheme checked)
    if content_type is not None:
        request.add_header("Content-Type", content_type)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:  # noqa: S310
        return _read_capped(response, limit)


def _with_retries(call: Callable[[], bytes]) -> bytes:
    last = "no attempt"
    for delay in (*RETRY_DELAYS, None):
        try:
            return call()
        except urllib.error.HTTPError as exc:
            if exc.code not in TRANSIENT_HTTP:
                raise TransferError(f"HTTP {exc.code}") from None
            last = f"HTTP {exc.code}"
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, FileNotFoundError | PermissionError):
                raise TransferError("file not readable") from None
            last = f"URL error: {exc.reason}"
        except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if delay is not None:
            time.sleep(delay)
    raise TransferError(last)
