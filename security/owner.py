"""The owner credential: a random token in an HttpOnly cookie, signed by a server key.

The server keeps only keyed hashes of tokens (owner ids). A token whose signature does not verify -
tampered, truncated, from another deployment - is treated as absent, and the client gets a new one.
Which cookie carries the token (partitioned or first-party) is decided per request: see
:mod:`security.cookie_mode`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_FILE = "secret.key"


def load_or_create_key(data_dir: Path, from_env: str | None = None) -> bytes:
    """The server key: from the environment if given, else a file in the data directory (created once)."""
    if from_env:
        return hashlib.sha256(from_env.encode("utf-8")).digest()
    path = data_dir / KEY_FILE
    if path.exists():
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key.hex())
    return key


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class OwnerCredentials:
    """Mints and verifies owner tokens; turns a valid token into an owner id."""

    def __init__(self, key: bytes):
        self._key = key

    def _mac(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._key, f"{purpose}\x00{value}".encode("utf-8"), hashlib.sha256).digest()

    def mint(self) -> str:
        nonce = _b64(secrets.token_bytes(24))
        return f"{nonce}.{_b64(self._mac('token', nonce)[:18])}"

    def owner_of(self, token: str | None) -> str | None:
        """The owner id of a valid token; None for a missing or tampered one."""
        if not token or len(token) > 128 or not token.isascii() or token.count(".") != 1:
            return None
        nonce, signature = token.split(".")
        if not hmac.compare_digest(signature, _b64(self._mac("token", nonce)[:18])):
            return None
        return self._mac("owner", nonce).hex()[:32]

    def tab_owner(self, session_hash: str) -> str:
        """The owner of a tab that can keep no cookie: its own session_hash, so it ends with the tab."""
        return "tab-" + self._mac("tab", session_hash).hex()[:28]

    def principal(self, owner: str, username: str | None) -> str:
        """Who owns stored data: the cookie owner, plus the login name when auth is on."""
        return owner if not username else self._mac("principal", f"{owner}\x00{username}").hex()[:32]

    def fingerprint(self, value: str) -> str:
        """A keyed, one-way name for logs and the UI."""
        return self._mac("fingerprint", value).hex()[:16]

    def keyed_hash(self, purpose: str, value: str) -> str:
        """A full-length keyed, one-way hash under its own purpose (e.g. how assistant tokens are stored)."""
        return self._mac(purpose, value).hex()
