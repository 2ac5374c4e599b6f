"""Keyed, one-way fingerprints: how a session or owner is named in logs and in the UI."""

from __future__ import annotations

import hashlib
import hmac
import secrets


class Fingerprinter:
    """HMAC-SHA256 under a server key. Without the key a fingerprint cannot be linked back to its input."""

    def __init__(self, key: bytes | None = None):
        self._key = key or secrets.token_bytes(32)

    def __call__(self, value: str) -> str:
        return hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
