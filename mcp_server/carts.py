"""MCP carts: which cart an MCP caller operates, and the cart actions on it.

An MCP caller (:class:`McpCaller`, established by the HTTP layer in ``mcp_server/http.py`` and put on
the request scope) is one MCP transport session, optionally holding an assistant token:

* without a token, the session owns its own conversation (stored under a principal derived from the
  session id, so nobody else's principal can ever name it); a host's per-conversation ``_meta`` hint
  narrows it into one conversation per hint, under the same principal;
* with a token, the session operates exactly the conversation the token was made for, as its owner.

Each (session, hint) is one :class:`~memory.session.Session` in the process-wide registry, keyed by a
:class:`~mcp_server.keys.McpSessionKey`. Everything about it can be rebuilt from the key and the store,
so eviction loses nothing. Cart changes go through the shared graph with the chat's own reducer and
wording (``agent/cart_actions.py``), under the conversation's turn lock, so the chat sees them next turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from agent.cart import Cart, describe_cart
from agent.cart_actions import CartAction
from agent.catalog import Catalog
from mcp_server.keys import McpSessionKey
from memory.conversation_memory import ConversationMemoryManager
from memory.registry import SessionRegistry
from memory.session import Session
from memory.store import TokenRecord
from security.owner import OwnerCredentials

SCOPE_KEY = "cmw.mcp_caller"  # where the HTTP layer leaves the caller on the ASGI scope
OWN_CART_TITLE = "Assistant cart (MCP)"
NOTE = "(This change was made by an assistant connected over MCP.)"
GONE = ("This cart's conversation was deleted. Nothing was changed. Start a new MCP session, or make a new "
        "token in the CMW Agent page.")


class CartGone(Exception):
    """The conversation behind this cart was deleted (by its owner, or by retention)."""


@dataclass(frozen=True)
class McpCaller:
    transport_id: str  # the Mcp-Session-Id, checked live by the SDK before any tool runs
    address: str  # keyed fingerprint of the client address
    token: TokenRecord | None = None


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class McpCarts:
    """Shared service; holds references to shared services only."""

    def __init__(self, registry: SessionRegistry, manager: ConversationMemoryManager,
                 credentials: OwnerCredentials, catalog: Catalog):
        self._registry = registry
        self._manager = manager
        self._credentials = credentials
        self.catalog = catalog

    def principal(self, caller: McpCaller) -> str:
        if caller.token is not None:
            return caller.token.owner
        return self._credentials.keyed_hash("mcp-principal", caller.transport_id)[:32]

    def rate_key(self, caller: McpCaller) -> str:
        """What the per-session call limit counts under: a keyed fingerprint of the transport session."""
        return self._credentials.keyed_hash("mcp-calls", caller.transport_id)[:16]

    def conversation_id(self, caller: McpCaller, hint: str | None) -> str:
        if caller.token is not None:
            return caller.token.conversation_id  # a token names exactly one conversation: hints do not apply
        return self._credentials.keyed_hash("mcp-conversation", json.dumps([caller.transport_id, hint]))[:32]

    async def session(self, caller: McpCaller, hint: str | None) -> Session:
        """This caller's live session for ``hint`` (created, or rebuilt after eviction, on first use), in
        its conversation. A session without a token gets its own stored conversation on first use."""
        hint = None if caller.token is not None else hint
        principal = self.principal(caller)
        session = self._registry.get_or_create(McpSessionKey(caller.transport_id, hint), owner=principal)
        session.principal = principal
        conversation_id = self.conversation_id(caller, hint)
        if session.conversation.conversation_id != conversation_id:
            if caller.token is None:
                entry = self._manager.entry(conversation_id, principal)
                async with entry.locked():
                    await self._manager.record_turn(entry, principal, session.fingerprint, OWN_CART_TITLE)
            if not await session.agent.open(conversation_id, principal):
                raise CartGone(GONE)
        if session.conversation.deleted:
            raise CartGone(GONE)
        return session

    async def cart(self, caller: McpCaller, hint: str | None) -> Cart:
        return (await (await self.session(caller, hint)).conversation.load()).cart

    async def change(self, caller: McpCaller, hint: str | None, name: str, args: dict,
                     action: Callable[[Cart], CartAction]) -> str:
        """Run one cart action on the caller's cart; a change is recorded like a chat tool call."""
        session = await self.session(caller, hint)
        conversation = session.conversation
        async with conversation.locked():  # the conversation's one lock: never interleaves with a chat turn
            result = action((await conversation.load()).cart)
            if result.op is not None:
                if not await self._manager.note_activity(conversation, session.principal):
                    raise CartGone(GONE)
                await conversation.append_tool_action(name, args, result.text, result.op, NOTE)
        session.touch()
        return result.text

    async def describe(self, caller: McpCaller, hint: str | None) -> str:
        """``my_session``: this MCP session only - never anything about another one, not even a count."""
        session = await self.session(caller, hint)
        cart = (await session.conversation.load()).cart
        lines = ["Your MCP session:",
                 f"- Fingerprint: {session.fingerprint} (a keyed, one-way hash; the session id is never shown)",
                 f"- Started: {_when(session.created_at)}",
                 f"- Last active: {_when(session.last_active)}"]
        if caller.token is not None:
            lines.append(f"- Connected with assistant token {caller.token.id} to a conversation of the web chat; "
                         f"the token expires {_when(caller.token.expires_at)}")
        elif hint is not None:
            lines.append("- Cart: the one for this conversation of your assistant (from the `_meta` it sent)")
        lines.append(describe_cart(cart, self.catalog.currency))
        return "\n".join(lines)
