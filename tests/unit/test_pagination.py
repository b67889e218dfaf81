"""PageTokens: opaque, signed, and only valid for the owner and filters they were issued for."""

from __future__ import annotations

import base64
import json

import pytest

from scheduler.errors import InvalidInput, InvalidPageToken
from scheduler.pagination import PageTokens

SECRET = b"unit-test-page-token-secret-0123456789"
POSITION = {"pk": "JOB#abc", "user_id": "alice", "created_key": "2026-01-01T00:00:00.000000Z#abc"}


@pytest.fixture
def tokens() -> PageTokens:
    return PageTokens(SECRET)


def unpack(token: str) -> tuple[bytes, dict[str, object]]:
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return raw[:16], json.loads(raw[16:])


def pack(mac: bytes, content: dict[str, object]) -> str:
    body = json.dumps(content, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")


def test_round_trip(tokens: PageTokens) -> None:
    token = tokens.encode(POSITION, owner="alice", scope="s1")
    assert tokens.decode(token, owner="alice", scope="s1") == POSITION


def test_a_token_is_url_safe_text(tokens: PageTokens) -> None:
    token = tokens.encode(POSITION, owner="alice", scope="s1")
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_an_invalid_token_is_an_invalid_input() -> None:
    # The API maps InvalidInput, and so this, to 400.
    assert issubclass(InvalidPageToken, InvalidInput)


def test_an_altered_position_is_rejected(tokens: PageTokens) -> None:
    # Given a real token whose position is changed, keeping its signature
    mac, content = unpack(tokens.encode(POSITION, owner="alice", scope="s1"))
    content["p"] = {**POSITION, "created_key": "2027-01-01T00:00:00.000000Z#zzz"}
    forged = pack(mac, content)
    # Then it is rejected
    with pytest.raises(InvalidPageToken, match="not a token this API issued"):
        tokens.decode(forged, owner="alice", scope="s1")


def test_a_token_moved_to_another_owner_is_rejected(tokens: PageTokens) -> None:
    # Given alice's token edited to name bob, keeping its signature
    mac, content = unpack(tokens.encode(POSITION, owner="alice", scope="s1"))
    forged = pack(mac, {**content, "o": "bob"})
    with pytest.raises(InvalidPageToken):
        tokens.decode(forged, owner="bob", scope="s1")


def test_a_flipped_signature_byte_is_rejected(tokens: PageTokens) -> None:
    mac, content = unpack(tokens.encode(POSITION, owner="alice", scope="s1"))
    flipped = bytes([mac[0] ^ 1]) + mac[1:]
    with pytest.raises(InvalidPageToken):
        tokens.decode(pack(flipped, content), owner="alice", scope="s1")


def test_a_token_signed_with_another_secret_is_rejected(tokens: PageTokens) -> None:
    other = PageTokens(b"another-deployment-secret-0123456789")
    token = other.encode(POSITION, owner="alice", scope="s1")
    with pytest.raises(InvalidPageToken):
        tokens.decode(token, owner="alice", scope="s1")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "a",
        "not a token",
        "!!!!",
        "AAAA",
        "é",
        base64.urlsafe_b64encode(b"x" * 64).decode(),
        base64.urlsafe_b64encode(b"\x00" * 16 + b'{"p":{},"o":"alice","s":"s1"}').decode(),
    ],
)
def test_garbage_is_rejected(tokens: PageTokens, garbage: str) -> None:
    with pytest.raises(InvalidPageToken):
        tokens.decode(garbage, owner="alice", scope="s1")


def test_another_owners_token_is_rejected(tokens: PageTokens) -> None:
    token = tokens.encode(POSITION, owner="alice", scope="s1")
    with pytest.raises(InvalidPageToken, match="another query"):
        tokens.decode(token, owner="bob", scope="s1")


def test_a_token_from_another_filter_scope_is_rejected(tokens: PageTokens) -> None:
    token = tokens.encode(POSITION, owner="alice", scope="status=ACTIVE")
    with pytest.raises(InvalidPageToken, match="another query"):
        tokens.decode(token, owner="alice", scope="status=PAUSED")
