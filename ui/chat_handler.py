"""Chat handlers: one streaming turn, and the events that rewrite it (stop, retry, undo, clear).

Every handler takes ``request: gr.Request`` and resolves the session once through :class:`SessionEdge`.
A request without a ``session_hash`` (a direct API run, cached examples) is refused before anything
else happens. Holds references to shared services only.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import aclosing
from typing import AsyncIterator

import gradio as gr

from agent.cmw_agent import TextDelta
from agent.context import TurnContext
from memory.conversation_memory import ConversationMemoryManager
from memory.session import Session
from security.admission import Admission, Busy
from security.rate_limit import RateLimiter, rate_limit_message
from settings import Settings
from ui.edge import SessionEdge, client_host
from ui.input_guard import clean_message, refusal_for
from ui.render import TurnView, render_transcript

log = logging.getLogger("cmw.chat")

ERROR_MESSAGE = "Sorry, something went wrong while answering. Please try again."
# What a tab asks for when it cannot remember its conversation (storage denied in a cross-site frame).
LATEST_CONVERSATION = "@latest"
TAB_ONLY_NOTICE = ("⚠️ Your browser keeps no cookies for this site, so this chat lives only in this tab: it stays "
                   "private, but it is gone when you close or reload the tab - allow cookies for this site (or "
                   "open the app in its own tab) to keep your conversations.")


class ChatHandlers:
    def __init__(self, edge: SessionEdge, manager: ConversationMemoryManager, settings: Settings):
        self._edge = edge
        self._manager = manager
        self._settings = settings
        self._owner_limit = RateLimiter(settings.rate_limit_per_owner)
        self._ip_limit = RateLimiter(settings.rate_limit_per_ip)
        self._admission = Admission(settings.concurrency_limit, settings.queue_max)

    async def _session_for(self, request, conversation_ref: str | None) -> Session:
        """Resolve the session and follow the tab's conversation reference, if it is this owner's."""
        session = await self._edge.resolve(request)
        if conversation_ref and conversation_ref != session.memory.conversation_id:
            await session.open_conversation(conversation_ref)
        return session

    def _refusal(self, session: Session, request, text: str) -> str | None:
        """Why this message is not run (empty, too long, too fast), or None. Nothing refused is stored."""
        refusal = refusal_for(text, max_chars=self._settings.max_message_chars)
        if refusal:
            return refusal
        wait = self._owner_limit.wait_seconds(session.principal)
        if wait:
            return rate_limit_message(self._owner_limit.limit, wait)
        wait = self._ip_limit.wait_seconds(self._edge.credentials.fingerprint(client_host(request)))
        if wait:
            return rate_limit_message(self._ip_limit.limit, wait)
        return None

    # -- one turn ------------------------------------------------------------------------------
    async def _run_turn(self, session: Session, text: str) -> AsyncIterator[TurnView]:
        """Stream one turn as successive views, at most one every ``stream_interval`` seconds.

        Waits for a process-wide slot (bounded waiting, else a busy answer), then for the session's lock.
        """
        view = TurnView()
        try:
            async with self._admission.slot():
                async with aclosing(self._locked_turn(session, text, view)) as updates:
                    async for update in updates:
                        yield update
        except Busy as busy:
            view.apply(TextDelta(str(busy)))
            yield view

    async def _locked_turn(self, session: Session, text: str, view: TurnView) -> AsyncIterator[TurnView]:
        async with session.turn_lock, session.memory.turn_lock:  # per tab, and per conversation across tabs
            memory = session.memory
            message_id = uuid.uuid4().hex
            await self._manager.store.record_turn(memory.conversation_id, session.principal, session.fingerprint, text)
            session.touch()
            session.stop_requested = False
            last_yield = 0.0
            settled = False
            try:
                async with aclosing(session.agent.stream_turn(text, TurnContext(session), message_id)) as events:
                    async for event in events:
                        view.apply(event)
                        now = time.monotonic()
                        if now - last_yield >= self._settings.stream_interval or not isinstance(event, TextDelta):
                            last_yield = now
                            yield view
                        if session.stop_requested:  # the Stop button (see stop())
                            break
                if session.stop_requested:
                    session.stats.stopped_turns += 1
                    await memory.settle_interrupted_turn(text, message_id, view.answer)
                    log.info("session %s: turn stopped after %d chars", session.fingerprint, len(view.answer))
                settled = True
            except Exception:
                log.exception("session %s: turn failed", session.fingerprint)
                view.apply_error(ERROR_MESSAGE)
                await memory.settle_interrupted_turn(text, message_id, view.answer)
                settled = True
            finally:
                if not settled:  # cancelled, or closed from outside (tab closed, Gradio dropped the run)
                    session.stats.stopped_turns += 1
                    await asyncio.shield(memory.settle_interrupted_turn(text, message_id, view.answer))
            session.stats.turns += 1
            session.stats.streamed_chars += len(view.answer)
            session.touch()
            yield view

    async def stop(self, request: gr.Request):
        """The Stop button: ask this session's running turn to end after what it has shown."""
        session = self._edge.existing(request)
        if session is not None:
            session.stop_requested = True

    # -- browser events ------------------------------------------------------------------------
    async def load(self, conversation_ref: str, request: gr.Request):
        """Page load (and reload): show the conversation this tab was showing, if it is this owner's; a tab
        that cannot remember it (a cross-site frame) continues this owner's most recent conversation."""
        if conversation_ref == LATEST_CONVERSATION:
            session = await self._edge.resolve(request)
            await session.open_latest_conversation()
        else:
            session = await self._session_for(request, conversation_ref)
        messages = (await session.memory.load()).messages
        tab_only = self._edge.tab_only(request)
        notice = gr.Markdown(TAB_ONLY_NOTICE, visible=True) if tab_only else gr.Markdown(visible=False)
        return render_transcript(messages), session.memory.conversation_id, notice

    async def respond(self, message: str, conversation_ref: str, request: gr.Request):
        """Chat submit from the page: yields (whole chat, conversation reference)."""
        session = await self._session_for(request, conversation_ref)
        ref = session.memory.conversation_id
        text = clean_message(message)
        history = render_transcript((await session.memory.load()).messages)
        refusal = self._refusal(session, request, text)
        if refusal:
            yield history + [gr.ChatMessage(role="assistant", content=refusal)], ref
            return
        shown = history + [gr.ChatMessage(role="user", content=text)]
        yield shown, ref
        async with aclosing(self._run_turn(session, text)) as views:
            async for view in views:
                yield shown + view.messages, gr.skip()

    async def retry(self, conversation_ref: str, request: gr.Request):
        """Retry: forget the last turn, in memory as on screen, and answer its message again."""
        session = await self._session_for(request, conversation_ref)
        async with session.turn_lock:
            text = await session.memory.drop_last_turn()
        if not text:
            yield render_transcript((await session.memory.load()).messages), session.memory.conversation_id
            return
        async for update in self.respond(text, session.memory.conversation_id, request):
            yield update

    async def undo(self, conversation_ref: str, request: gr.Request):
        """Undo: forget the last turn and put its message back in the textbox."""
        session = await self._session_for(request, conversation_ref)
        async with session.turn_lock:
            text = await session.memory.drop_last_turn()
            history = render_transcript((await session.memory.load()).messages)
        return history, text or ""

    async def clear(self, request: gr.Request):
        """Clear (and New chat): start a new, empty conversation; earlier ones stay in the list."""
        session = await self._edge.resolve(request)
        async with session.turn_lock:
            session.start_new_conversation()
        return [], session.memory.conversation_id

    async def unload(self, request: gr.Request):
        """The tab closed: release its live objects early. Stored conversations are untouched."""
        session = self._edge.existing(request)
        if session is not None:
            self._edge.registry.discard(request.session_hash)

    # -- public API: /chat -----------------------------------------------------------------
    async def api_chat(self, message: str, request: gr.Request):
        """``/chat``: one message in, the reply text streamed out. One gradio_client.Client = one session."""
        session = await self._edge.resolve(request)
        text = clean_message(message)
        refusal = self._refusal(session, request, text)
        if refusal:
            yield refusal
            return
        sent = None
        async for view in self._run_turn(session, text):
            if view.answer != sent:  # tool events leave the text unchanged: nothing new to send
                sent = view.answer
                yield sent
        if sent is None:
            yield ""
