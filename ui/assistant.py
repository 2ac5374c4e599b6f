""""Connect an assistant": an MCP URL and a token that opens this conversation's cart to an MCP client.

A token is bound to this owner and the conversation the tab shows; it is shown once (the server keeps
only a keyed hash), expires after ``CMW_MCP_TOKEN_HOURS``, and can be revoked here. Holds no state.
"""

from __future__ import annotations

import json
from types import MappingProxyType
from datetime import datetime, timezone

import gradio as gr

from mcp_server.tokens import AssistantTokens
from memory.conversation_memory import ConversationMemoryManager
from memory.store import TokenRecord
from ui.edge import SessionEdge

HIDDEN = MappingProxyType({"api_visibility": "private"})
INTRO = ("Let an assistant that speaks MCP (Claude, ChatGPT connectors, IDE agents) use **this conversation's "
         "cart**: what it adds shows up here on your next message or reload. The token is shown once; treat it "
         "like a password. Without a token, an MCP client gets a cart of its own.")
NO_TOKEN = "Pick one of your tokens to revoke."
REVOKED = "Token {id} was revoked: assistants using it are refused from now on."


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def mcp_url(request: gr.Request) -> str:
    """The /mcp URL on the host and scheme this page was reached by (proxies included)."""
    raw = request.request
    headers = raw.headers
    scheme = headers.get("x-forwarded-proto", "").split(",")[0].strip() or raw.url.scheme
    host = headers.get("x-forwarded-host", "").split(",")[0].strip() or headers.get("host") or raw.url.netloc
    return f"{scheme}://{host}/mcp"


def client_config(url: str, token: str) -> str:
    return json.dumps({"mcpServers": {"cmw-cart": {"url": url, "headers": {"Authorization": f"Bearer {token}"}}}},
                      indent=2)


class AssistantHandlers:
    def __init__(self, edge: SessionEdge, manager: ConversationMemoryManager, tokens: AssistantTokens):
        self._edge = edge
        self._manager = manager
        self._tokens = tokens

    async def _choices(self, principal: str) -> gr.Dropdown:
        records = await self._tokens.list(principal)
        titles = {r.id: r.title for r in await self._manager.conversations(principal)}
        return gr.Dropdown(choices=[(_label(t, titles), t.id) for t in records], value=None)

    async def _mint(self, conversation_ref: str | None, request: gr.Request) -> tuple[object, str, TokenRecord]:
        """A new token for the conversation this tab shows (stored first, if it has no message yet)."""
        session = await self._edge.resolve(request)
        if conversation_ref and conversation_ref != session.conversation.conversation_id:
            await session.agent.open(conversation_ref, session.principal)
        entry = session.agent.current(session.principal)
        if await self._manager.owned_entry(entry.conversation_id, session.principal) is None:
            async with entry.locked():
                await self._manager.record_turn(entry, session.principal, session.fingerprint, "")
        token, record = await self._tokens.mint(session.principal, entry.conversation_id)
        return session, token, record

    async def make(self, conversation_ref: str, request: gr.Request):
        """The button: the URL, the token (shown once) and a client configuration to paste."""
        session, token, record = await self._mint(conversation_ref, request)
        url = mcp_url(request)
        text = (f"**MCP URL:** `{url}`\n\n**Token** (shown once, expires {_when(record.expires_at)}):\n\n"
                f"```\n{token}\n```\n\nA typical MCP client configuration:\n\n```json\n{client_config(url, token)}\n```")
        return text, await self._choices(session.principal), record.conversation_id

    async def api_token(self, request: gr.Request) -> dict:
        """``/assistant_token``: a token for this client's current conversation."""
        _, token, record = await self._mint(None, request)
        return {"mcp_url": mcp_url(request), "token": token, "token_id": record.id,
                "conversation_id": record.conversation_id, "expires_at": _when(record.expires_at)}

    async def api_revoke(self, token_id: str, request: gr.Request) -> str:
        """``/revoke_assistant_token``: revoke one of this owner's tokens by its id."""
        session = await self._edge.resolve(request)
        if not await self._tokens.revoke((token_id or "").strip(), session.principal):
            raise gr.Error(NO_TOKEN, print_exception=False)
        return REVOKED.format(id=token_id)

    async def listing(self, request: gr.Request):
        session = await self._edge.resolve(request)
        return await self._choices(session.principal)

    async def revoke(self, token_id: str, request: gr.Request):
        session = await self._edge.resolve(request)
        if not token_id or not await self._tokens.revoke(token_id, session.principal):
            gr.Warning(NO_TOKEN)
            return gr.skip(), await self._choices(session.principal)
        return REVOKED.format(id=token_id), await self._choices(session.principal)


def _label(record: TokenRecord, titles: dict[str, str]) -> str:
    return f"{record.id} · {titles.get(record.conversation_id, 'deleted conversation')} · expires {_when(record.expires_at)}"


def build_assistant_panel(handlers: AssistantHandlers, conversation_ref: gr.Textbox) -> None:
    """The panel and its events; call inside the page's Blocks."""
    with gr.Accordion("Connect an assistant (MCP)", open=False, elem_id="assistant-panel") as panel:
        gr.Markdown(INTRO)
        make = gr.Button("Make a token for this conversation", size="sm", elem_id="make-token")
        shown = gr.Markdown(elem_id="assistant-token")
        with gr.Row():
            tokens = gr.Dropdown(label="Your assistant tokens", choices=[], elem_id="assistant-tokens")
            revoke = gr.Button("Revoke", size="sm", variant="stop", elem_id="revoke-token")
    make.click(handlers.make, [conversation_ref], [shown, tokens, conversation_ref], **HIDDEN)
    panel.expand(handlers.listing, None, [tokens], **HIDDEN)
    revoke.click(handlers.revoke, [tokens], [shown, tokens], **HIDDEN)
    # Public API (stable contract): /assistant_token, /revoke_assistant_token.
    with gr.Row(visible=False):
        api_made, api_id, api_result = gr.JSON(label="token"), gr.Textbox(label="token_id"), gr.Textbox(label="result")
        api_make, api_revoke = gr.Button(), gr.Button()
    api_make.click(handlers.api_token, None, [api_made], api_name="assistant_token",
                   api_description="A token that lets an MCP client operate this client's current conversation's cart.")
    api_revoke.click(handlers.api_revoke, [api_id], [api_result], api_name="revoke_assistant_token",
                     api_description="Revoke one of your assistant tokens by its id.")
