"""The conversations sidebar and its API: list, open, rename, delete - only ever this owner's.

The sidebar is one ``gr.HTML`` list (see ui/sidebar.py): its value is a list of plain items built here,
and its clicks come back as one event whose data says what to do (open, rename, delete) with which id.
Every id is checked against the owner before anything happens.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import gradio as gr

from memory.conversation_memory import ConversationMemoryManager
from memory.store import ConversationRecord
from ui.edge import SessionEdge
from ui.failures import told_to_the_person
from ui.render import render_transcript, transcript_records

log = logging.getLogger("cmw.conversations")

NOT_YOURS = "That conversation does not exist or is not yours."
NEW_CHAT_TITLE = "New chat"
RENAME_HINT = "Type a name for the conversation, then press Enter."


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def relative_time(epoch: float, now: float) -> str:
    """How long ago, the way a person says it: just now, 5 min ago, 3 h ago, yesterday, 4 days ago, 21 Nov."""
    seconds = max(0.0, now - epoch)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    if seconds < 2 * 86400:
        return "yesterday"
    if seconds < 7 * 86400:
        return f"{int(seconds // 86400)} days ago"
    then, today = datetime.fromtimestamp(epoch, tz=timezone.utc), datetime.fromtimestamp(now, tz=timezone.utc)
    return f"{then.day} {then:%b}" + ("" if then.year == today.year else f" {then.year}")


def sidebar_items(records: list[ConversationRecord], current: str, now: float) -> list[dict]:
    """The sidebar's value: this owner's conversations, newest first, the current one marked; a current
    conversation not stored yet (a new chat before its first message) is listed first as "New chat"."""
    items = [{"id": r.id, "title": r.title, "when": relative_time(r.updated_at, now), "exact": _when(r.updated_at),
              "current": r.id == current, "stored": True} for r in records]
    if not any(item["current"] for item in items):
        items.insert(0, {"id": current, "title": NEW_CHAT_TITLE, "when": "", "exact": "", "current": True,
                         "stored": False})
    return items


class ConversationHandlers:
    def __init__(self, edge: SessionEdge, manager: ConversationMemoryManager):
        self._edge = edge
        self._manager = manager

    async def refresh(self, request: gr.Request) -> list[dict]:
        """The sidebar: this owner's conversations, newest first, the current one highlighted."""
        with told_to_the_person(log, "conversation list"):
            session = await self._edge.resolve(request)
            records = await self._manager.conversations(session.principal)
            return sidebar_items(records, session.conversation.conversation_id, time.time())

    async def act(self, evt: gr.EventData, request: gr.Request):
        """A click in the sidebar: ``{"action": "open" | "rename" | "delete", "id": ..., "title": ...}``.
        Returns (chat, conversation reference, sidebar); what does not change is skipped."""
        data = getattr(evt, "_data", None) or {}
        action, conversation_id = data.get("action"), str(data.get("id") or "")
        if action == "open":
            chat, ref = await self.switch(conversation_id, request)
            return chat, ref, await self.refresh(request)
        if action == "rename":
            return gr.skip(), gr.skip(), await self.rename(conversation_id, str(data.get("title") or ""), request)
        if action == "delete":
            return await self.delete(conversation_id, request)
        return gr.skip(), gr.skip(), await self.refresh(request)

    async def switch(self, conversation_id: str, request: gr.Request):
        with told_to_the_person(log, "open conversation"):
            session = await self._edge.resolve(request)
            if not conversation_id or not await session.agent.open(conversation_id, session.principal):
                gr.Warning(NOT_YOURS)
            messages = (await session.conversation.load()).messages
            return render_transcript(messages), session.conversation.conversation_id

    async def rename(self, conversation_id: str, title: str, request: gr.Request):
        with told_to_the_person(log, "rename"):
            session = await self._edge.resolve(request)
            title = " ".join(title.split())
            if not title:
                gr.Warning(RENAME_HINT)
            elif not conversation_id or not await self._manager.rename(conversation_id, session.principal, title):
                gr.Warning(NOT_YOURS)
        return await self.refresh(request)

    async def delete(self, conversation_id: str, request: gr.Request):
        """Delete one conversation (messages, cart, checkpoints) after the sidebar's confirmation; a turn
        running in it is stopped and writes nothing. A tab showing it moves to a new, empty conversation."""
        with told_to_the_person(log, "delete"):
            session = await self._edge.resolve(request)
            if not (conversation_id and await self._manager.delete(conversation_id, session.principal)):
                gr.Warning(NOT_YOURS)
            showing = session.conversation.conversation_id == conversation_id
            conversation = session.agent.current(session.principal)
            chat = render_transcript((await conversation.load()).messages) if showing else gr.skip()
            return chat, conversation.conversation_id, await self.refresh(request)

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
