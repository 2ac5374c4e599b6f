"""How an MCP session is named in the session registry, and how it is fingerprinted.

A Gradio session is keyed by its ``session_hash`` string; an MCP session by a :class:`McpSessionKey`,
a frozen dataclass. No string can equal one, so the two kinds can never collide in the registry (no
string prefixes). A ``conversation_hint`` (a host's per-conversation ``_meta`` id) narrows one MCP
session into several carts; it never names anything outside that MCP session.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Hashable

from security.owner import OwnerCredentials


@dataclass(frozen=True)
class McpSessionKey:
    transport_id: str  # the Mcp-Session-Id the SDK issued at initialize
    conversation_hint: str | None = None


def session_fingerprints(credentials: OwnerCredentials) -> Callable[[Hashable], str]:
    """The registry's fingerprint function: a keyed hash per kind of key, under separate purposes."""

    def fingerprint(key: Hashable) -> str:
        if isinstance(key, McpSessionKey):
            return credentials.keyed_hash("mcp-session", json.dumps([key.transport_id, key.conversation_hint]))[:16]
        if isinstance(key, str):
            return credentials.fingerprint(key)
        raise TypeError(f"not a session key: {type(key).__name__}")

    return fingerprint
