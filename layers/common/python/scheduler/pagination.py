"""Opaque, tamper-checked page tokens: an HMAC binds a position to its owner and filters."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

from scheduler.errors import InvalidPageToken


class PageTokens:
    """`key` is the HMAC key, or a function that returns the current one (read from Secrets
    Manager and cached, so that a rotated key is picked up without a redeploy)."""

    def __init__(self, key: bytes | Callable[[], bytes]) -> None:
        self._key = key

    @property
    def _secret(self) -> bytes:
        return self._key() if callable(self._key) else self._key

    def encode(self, position: dict[str, Any], *, owner: str, scope: str) -> str:
        payload = json.dumps({"p": position, "o": owner, "s": scope}, separators=(",", ":"))
        body = payload.encode()
        mac = hmac.new(self._secret, body, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")

    def decode(self, token: str, *, owner: str, scope: str) -> dict[str, Any]:
        """The position inside `token`, or InvalidPageToken if it was forged, altered or is
        someone else's (another owner, or another filter set)."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            raise InvalidPageToken("next_token is not a token this API issued") from None
        mac, body = raw[:16], raw[16:]
        expected = hmac.new(self._secret, body, hashlib.sha256).digest()[:16]
        if len(raw) <= 16 or not hmac.compare_digest(mac, expected):
            raise InvalidPageToken("next_token is not a token this API issued")
        content = json.loads(body)
        if content.get("o") != owner or content.get("s") != scope:
            raise InvalidPageToken("next_token belongs to another query; start again without it")
        position = content.get("p")
        if not isinstance(position, dict):
            raise InvalidPageToken("next_token is not a token this API issued")
        return position
