"""Assistant tokens: a bearer token made in the page that lets an MCP client operate one conversation.

A token is shown once and never stored: the store keeps a keyed hash of it (``OwnerCredentials``), the
owner principal and the conversation it opens, and when it expires. A token dies when it expires, when
it is revoked, when its conversation is deleted, and with *Delete all my data*. Never log a token: logs
name it by its ``id`` (a random label) only.
"""

from __future__ import annotations

import secrets
import time
import uuid

from memory.store import ConversationStore, TokenRecord
from security.owner import OwnerCredentials

TOKEN_PREFIX = "cmwa_"
MAX_TOKEN_CHARS = 100


class AssistantTokens:
    """Mints, verifies, lists and revokes tokens. Shared; holds no per-user data (the store does)."""

    def __init__(self, store: ConversationStore, credentials: OwnerCredentials, *, hours: float):
        self._store = store
        self._credentials = credentials
        self._lifetime = hours * 3600

    def _hash(self, token: str) -> str:
        return self._credentials.keyed_hash("assistant-token", token)

    async def mint(self, owner: str, conversation_id: str, now: float | None = None) -> tuple[str, TokenRecord]:
        """A new token for ``owner``'s ``conversation_id``: (the token, shown once; its record)."""
        now = time.time() if now is None else now
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(uuid.uuid4().hex[:12], owner, conversation_id, now, now + self._lifetime)
        await self._store.add_token(self._hash(token), record)
        return token, record

    async def verify(self, token: str | None) -> TokenRecord | None:
        """The live token's record; None for a missing, malformed, unknown, revoked or expired one."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
            return None
        return await self._store.token_by_hash(self._hash(token))

    async def list(self, owner: str) -> list[TokenRecord]:
        return await self._store.tokens_for_owner(owner)

    async def revoke(self, token_id: str, owner: str) -> bool:
        return bool(token_id) and await self._store.revoke_token(token_id, owner)
