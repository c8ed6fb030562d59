"""Node tokens: issued once, stored only as a salted SHA-256 hash, compared in constant time.

A token reads ``<token id>.<secret>``: the id (12 hex characters) is public and says which node's hash to
check, so a bearer token is verified with one hash, not one per node. The secret has 256 bits of
entropy, so a fast salted hash is as safe as a slow KDF would be for it (no dictionary to attack).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from hub.settings import Settings

SCHEME = "sha256"


@dataclass(frozen=True)
class IssuedToken:
    """A new token (shown to its node once) and what is stored about it."""

    token: str
    token_id: str
    token_hash: str

    def __repr__(self) -> str:  # never print the token by accident
        return f"IssuedToken(token_id={self.token_id!r})"


def _digest(salt: bytes, secret: str) -> str:
    return hashlib.sha256(salt + secret.encode("utf-8")).hexdigest()


def issue() -> IssuedToken:
    """A fresh random token with its id and salted hash."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    return IssuedToken(f"{token_id}.{secret}", token_id, f"{SCHEME}${salt.hex()}${_digest(salt, secret)}")


def split(token: str) -> tuple[str, str] | None:
    """(token id, secret) of a node token, or None if it does not have that shape."""
    token_id, sep, secret = token.partition(".")
    if not sep or len(token_id) != 12 or not secret:
        return None
    return token_id, secret


def verify(token: str, token_hash: str | None) -> bool:
    """Whether ``token`` is the one ``token_hash`` was made from (constant-time comparison)."""
    parts = split(token)
    if parts is None or not token_hash:
        return False
    scheme, _, rest = token_hash.partition("$")
    salt_hex, _, digest = rest.partition("$")
    if scheme != SCHEME or not digest:
        return False
    try:
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    return hmac.compare_digest(_digest(salt, parts[1]), digest)


def same_secret(given: str, expected: str) -> bool:
    """Constant-time equality of two secrets (the operator token against its file)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def process_token(settings: Settings, explicit: str | None = None) -> str | None:
    """The token this process presents to the API and registry: ``explicit`` (e.g. ``--token``), else
    ``Settings.client_token()`` (``HUB_TOKEN``, else the operator token file when this user can read it)."""
    if explicit and explicit.strip():
        return explicit.strip()
    return settings.client_token()
