"""The local identity provider (an RSA key pair that signs bearer tokens) and the API's JWT
authorizer, checking tokens the way API Gateway's HTTP API JWT authorizer does.

API Gateway's rules (docs: "Controlling access to HTTP APIs with JWT authorizers"): the token
is the identity source, alone or prefixed with `Bearer `; it must be signed with RS256 by a key
of the issuer's JWKS (matching `kid`); `iss` must equal the issuer; `aud`, or `client_id` when
there is no `aud`, must be one of the configured audiences; `exp` must be in the future and
`nbf`/`iat` in the past. The claims reach the function as strings.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER_PATH = "/local-issuer"
AUDIENCE = "scheduler"
TOKEN_LIFETIME_SECONDS = 12 * 3600
ALGORITHM = "RS256"
_PRIVATE_KEY_FILE = "jwt-signing-key.pem"


def issuer_for(api_port: int) -> str:
    """The local issuer lives on the API's own port, where its discovery documents are served."""
    return f"http://127.0.0.1:{api_port}{ISSUER_PATH}"


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only; atomic, so a reader never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def load_or_create_secret(state_dir: Path, name: str, length: int = 48) -> str:
    """A random alphanumeric secret kept in the state directory (like the template's
    GenerateSecretString with ExcludePunctuation), created on first use."""
    path = state_dir / name
    if not path.exists():
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        _write_private(path, "".join(secrets.choice(alphabet) for _ in range(length)).encode())
    return path.read_text().strip()


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class KeyPair:
    """The local issuer's signing key; generated once into the state directory."""

    private_key: rsa.RSAPrivateKey

    @classmethod
    def load_or_create(cls, state_dir: Path) -> KeyPair:
        path = state_dir / _PRIVATE_KEY_FILE
        if not path.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write_private(
                path,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError(f"{path} does not hold an RSA private key")
        return cls(loaded)

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    @property
    def kid(self) -> str:
        """Key id: a digest of the public key, so a new key pair gets a new id."""
        der = self.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()[:16]

    def jwks(self) -> dict[str, Any]:
        numbers = self.public_key.public_numbers()
        key = {
            "kty": "RSA",
            "use": "sig",
            "alg": ALGORITHM,
            "kid": self.kid,
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
        }
        return {"keys": [key]}

    def mint(
        self,
        subject: str,
        *,
        issuer: str,
        audience: str = AUDIENCE,
        lifetime_seconds: int = TOKEN_LIFETIME_SECONDS,
        now: float | None = None,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed access token for `subject` (negative lifetimes give expired tokens)."""
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "sub": subject,
            "iss": issuer,
            "aud": audience,
            "iat": issued,
            "nbf": issued,
            "exp": issued + lifetime_seconds,
            "jti": uuid.uuid4().hex,
            "token_use": "access",
        }
        claims.update(extra_claims or {})
        token: str = jwt.encode(claims, self.private_key, ALGORITHM, headers={"kid": self.kid})
        return token

    def discovery_documents(self, issuer: str) -> dict[str, dict[str, Any]]:
        """Path (under the issuer URL's host) -> JSON document, as an OIDC issuer serves them."""
        jwks_path = f"{ISSUER_PATH}/.well-known/jwks.json"
        base = issuer.removesuffix(ISSUER_PATH)
        return {
            f"{ISSUER_PATH}/.well-known/openid-configuration": {
                "issuer": issuer,
                "jwks_uri": f"{base}{jwks_path}",
                "id_token_signing_alg_values_supported": [ALGORITHM],
                "subject_types_supported": ["public"],
                "response_types_supported": ["token"],
            },
            jwks_path: self.jwks(),
        }


class Unauthorized(Exception):
    """The request may not pass the authorizer; `description` says why, for the client."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    @property
    def www_authenticate(self) -> str:
        description = self.description.replace('"', "'")
        return f'Bearer scope="" error="invalid_token" error_description="{description}"'


def claim_as_string(value: Any) -> str:
    """How API Gateway hands a claim to the function: strings as they are, arrays as `[a b]`."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(claim_as_string(item) for item in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class JwtAuthorizer:
    """The template's JwtAuthorizer: issuer and audiences from its JwtConfiguration."""

    issuer: str
    audiences: Sequence[str]
    jwks: Mapping[str, Any]

    def authorize(self, authorization: str | None) -> dict[str, str]:
        """The verified claims as strings, or Unauthorized naming what is wrong."""
        token = (authorization or "").strip()
        if not token:
            raise Unauthorized("the Authorization header is missing")
        scheme, _, rest = token.partition(" ")
        if scheme.lower() == "bearer":
            token = rest.strip()
        if not token:
            raise Unauthorized("the Authorization header has no token after 'Bearer'")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Unauthorized("the token is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm != ALGORITHM:
            raise Unauthorized(
                f"signing method {algorithm} is invalid; the issuer signs with RS256"
            )
        key = self._key(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                options={"require": ["exp"], "verify_aud": False, "verify_iss": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized(
                "the token's signature does not verify with the issuer's key"
            ) from None
        except jwt.ImmatureSignatureError as error:
            raise Unauthorized(f"the token is not valid yet ({error})") from None
        except jwt.MissingRequiredClaimError as error:
            raise Unauthorized(f"the token has no '{error.claim}' claim") from None
        except jwt.InvalidTokenError as error:
            raise Unauthorized(f"the token is invalid: {error}") from None
        if claims.get("iss") != self.issuer:
            raise Unauthorized(
                f"the token's issuer {claims.get('iss')!r} is not the expected {self.issuer!r}"
            )
        audiences = claims.get("aud", claims.get("client_id"))
        given = [audiences] if isinstance(audiences, str) else list(audiences or [])
        if not set(given) & set(self.audiences):
            raise Unauthorized(
                f"the token's audience {given or 'none'} is not one of {list(self.audiences)}"
            )
        return {name: claim_as_string(value) for name, value in claims.items()}

    def _key(self, kid: Any) -> Any:
        for candidate in self.jwks.get("keys", []):
            if candidate.get("kid") == kid:
                return jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(candidate))
        raise Unauthorized(f"the token's key id (kid) {kid!r} is not among the issuer's keys")
