"""The conversations panel and its API: list, switch, rename, delete - only ever this owner's."""

from __future__ import annotations

from datetime import datetime, timezone

import gradio as gr

from memory.conversation_memory import ConversationMemoryManager
from memory.store import ConversationRecord
from ui.edge import SessionEdge
from ui.render import render_transcript, transcript_records

NOT_YOURS = "That conversation does not exist or is not yours."


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _choices(records: list[ConversationRecord]) -> list[tuple[str, str]]:
    return [(f"{r.title} · {_when(r.updated_at)}", r.id) for r in records]


class ConversationHandlers:
    def __init__(self, edge: SessionEdge, manager: ConversationMemoryManager):
        self._edge = edge
        self._manager = manager

    async def refresh(self, request: gr.Request):
        """The panel: this owner's conversations, newest first, the current one selected."""
        session = await self._edge.resolve(request)
        records = await self._manager.conversations(session.principal)
        current = session.conversation.conversation_id
        return gr.Radio(choices=_choices(records), value=current if any(r.id == current for r in records) else None)

    async def switch(self, conversation_id: str, request: gr.Request):
        session = await self._edge.resolve(request)
        if not conversation_id or not await session.agent.open(conversation_id, session.principal):
            gr.Warning(NOT_YOURS)
        messages = (await session.conversation.load()).messages
        return render_transcript(messages), session.conversation.conversation_id

    async def rename(self, conversation_id: str, title: str, request: gr.Request):
        session = await self._edge.resolve(request)
        if not conversation_id or not await self._manager.rename(conversation_id, session.principal, title or ""):
            gr.Warning("Pick one of your conversations and type a new name.")
        return await self.refresh(request), ""

    async def delete(self, conversation_id: str, request: gr.Request):
        """Delete the selected conversation (messages, cart, checkpoints); a turn running in it is stopped
        and writes nothing. A tab showing it moves to a new conversation with its next action."""
        session = await self._edge.resolve(request)
        if not (conversation_id and await self._manager.delete(conversation_id, session.principal)):
            gr.Warning(NOT_YOURS)
        conversation = session.agent.current(session.principal)
        messages = (await conversation.load()).messages
        return render_transcript(messages), conversation.conversation_id, await self.refresh(request)

    # -- public API ----------------------------------------------------------------------------
    async def api_conversations(self, request: gr.Request) -> list[dict]:
        """``/conversations``: this owner's conversations, newest first (id, title, updated_at)."""
        session = await self._edge.resolve(request)
        return [{"id": r.id, "title": r.title, "updated_at": _when(r.updated_at),
                 "current": r.id == session.conversation.conversation_id}
                for r in await self._manager.conversations(session.principal)]

    async def api_resume(self, conversation_id: str, request: gr.Request) -> list[dict]:
        """``/resume``: continue one of this owner's conversations in this client's session; returns its
        messages as ``[{"role", "content"}]``. Anyone else's id is refused."""
        session = await self._edge.resolve(request)
        if not await session.agent.open((conversation_id or "").strip(), session.principal):
            raise gr.Error(NOT_YOURS, print_exception=False)
        return transcript_records((await session.conversation.load()).messages)
