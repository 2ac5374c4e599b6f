"""The edge: Gradio handlers resolve the caller's session once and pass it down.

Every handler takes ``request: gr.Request``; a request without a ``session_hash`` (a direct API run,
cached examples) is refused before anything else happens. Holds references to shared services only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator

import gradio as gr

from agent.cmw_agent import TextDelta
from agent.context import TurnContext
from memory.registry import SessionRegistry
from memory.session import Session
from security.admission import Admission, Busy
from security.owner import COOKIE_NAME, OwnerCredentials
from security.rate_limit import RateLimiter, rate_limit_message
from settings import Settings
from ui.input_guard import clean_message, refusal_for
from ui.render import TurnView, render_transcript

log = logging.getLogger("cmw.chat")

NO_SESSION_MESSAGE = ("This endpoint needs a session: use the web page, or gradio_client "
                      "(one Client is one session). Direct /run calls are not served.")
ERROR_MESSAGE = "Sorry, something went wrong while answering. Please try again."


def _cookie(request, name: str) -> str | None:
    raw = getattr(request, "request", None)
    cookies = raw.cookies if raw is not None else getattr(request, "cookies", None) or {}
    return cookies.get(name)


def _client_host(request) -> str:
    raw = getattr(request, "request", None)
    client = raw.client if raw is not None else getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


class ChatHandlers:
    """The Gradio handlers. Shared by all users; holds references to shared services only."""

    def __init__(self, registry: SessionRegistry, settings: Settings, credentials: OwnerCredentials):
        self._registry = registry
        self._settings = settings
        self._credentials = credentials
        self._owner_limit = RateLimiter(settings.rate_limit_per_owner)
        self._ip_limit = RateLimiter(settings.rate_limit_per_ip)
        self._admission = Admission(settings.concurrency_limit, settings.queue_max)

    # -- session resolution -------------------------------------------------------------------
    def resolve(self, request: gr.Request | None) -> Session:
        """The caller's session: by session_hash, served only to the owner it is bound to."""
        session_hash = getattr(request, "session_hash", None) if request is not None else None
        if not session_hash:
            raise gr.Error(NO_SESSION_MESSAGE, print_exception=False)
        owner = self._credentials.owner_of(_cookie(request, COOKIE_NAME))
        return self._registry.get_or_create(session_hash, owner, getattr(request, "username", None))

    def _refusal(self, session: Session, request, text: str) -> str | None:
        """Why this message is not run (length, empty, rate), or None. A refused message is not stored."""
        refusal = refusal_for(text, max_chars=self._settings.max_message_chars)
        if refusal:
            return refusal
        owner_key = session.owner or session.fingerprint
        wait = self._owner_limit.wait_seconds(owner_key)
        if wait:
            return rate_limit_message(self._owner_limit.limit, wait)
        wait = self._ip_limit.wait_seconds(self._credentials.fingerprint(_client_host(request)))
        if wait:
            return rate_limit_message(self._ip_limit.limit, wait)
        return None

    def _existing(self, request: gr.Request | None) -> Session | None:
        session_hash = getattr(request, "session_hash", None) if request is not None else None
        return self._registry.peek(session_hash) if session_hash else None

    # -- one turn ------------------------------------------------------------------------------
    async def _run_turn(self, session: Session, text: str) -> AsyncIterator[TurnView]:
        """Stream one turn as successive views, at most one every ``stream_interval`` seconds.

        Waits for a process-wide slot (bounded waiting, else a busy answer), then for the session's lock.
        """
        view = TurnView()
        try:
            async with self._admission.slot():
                async for update in self._locked_turn(session, text, view):
                    yield update
        except Busy as busy:
            view.apply(TextDelta(str(busy)))
            yield view

    async def _locked_turn(self, session: Session, text: str, view: TurnView) -> AsyncIterator[TurnView]:
        async with session.turn_lock:  # two submits of one session never interleave
            before = len((await session.memory.load()).messages)
            session.touch()
            last_yield = 0.0
            try:
                async for event in session.agent.stream_turn(text, TurnContext(session)):
                    view.apply(event)
                    now = time.monotonic()
                    if now - last_yield >= self._settings.stream_interval or not isinstance(event, TextDelta):
                        last_yield = now
                        yield view
            except asyncio.CancelledError:
                session.stats.stopped_turns += 1
                await asyncio.shield(session.memory.settle_interrupted_turn(text, before, view.answer))
                log.info("session %s: turn stopped after %d chars", session.fingerprint, len(view.answer))
                raise
            except Exception:
                log.exception("session %s: turn failed", session.fingerprint)
                view.apply_error(ERROR_MESSAGE)
                await session.memory.settle_interrupted_turn(text, before, view.answer)
            session.stats.turns += 1
            session.stats.streamed_chars += len(view.answer)
            session.touch()
            yield view

    # -- browser events ------------------------------------------------------------------------
    async def load(self, request: gr.Request):
        """Page load: show the conversation this session already has (none for a new page)."""
        session = self._existing(request)
        if session is None:
            return []
        return render_transcript((await session.memory.load()).messages)

    async def respond(self, message: str, request: gr.Request):
        """Chat submit from the page: yields the whole chat (history + the streaming turn)."""
        session = self.resolve(request)
        text = clean_message(message)
        history = render_transcript((await session.memory.load()).messages)
        refusal = self._refusal(session, request, text)
        if refusal:
            yield history + [gr.ChatMessage(role="assistant", content=refusal)]
            return
        shown = history + [gr.ChatMessage(role="user", content=text)]
        yield shown
        async for view in self._run_turn(session, text):
            yield shown + view.messages

    async def retry(self, request: gr.Request):
        """Retry: forget the last turn, in memory as on screen, and answer its message again."""
        session = self.resolve(request)
        async with session.turn_lock:
            text = await session.memory.drop_last_turn()
        if not text:
            yield render_transcript((await session.memory.load()).messages)
            return
        async for chat in self.respond(text, request):
            yield chat

    async def undo(self, request: gr.Request):
        """Undo: forget the last turn and put its message back in the textbox."""
        session = self.resolve(request)
        async with session.turn_lock:
            text = await session.memory.drop_last_turn()
            history = render_transcript((await session.memory.load()).messages)
        return history, text or ""

    async def clear(self, request: gr.Request):
        """Clear: start a new, empty conversation for this session."""
        session = self.resolve(request)
        async with session.turn_lock:
            await session.start_new_conversation()
        return []

    # -- public API: /chat -----------------------------------------------------------------
    async def api_chat(self, message: str, request: gr.Request):
        """``/chat``: one message in, the reply text streamed out. One gradio_client.Client = one session."""
        session = self.resolve(request)
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
