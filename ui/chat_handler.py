"""Chat handlers: one streaming turn, and the events that rewrite it (stop, retry, undo, clear).

Every handler takes ``request: gr.Request`` and resolves the session once through :class:`SessionEdge`.
A request without a ``session_hash`` (a direct API run, cached examples) is refused before anything
else happens. Holds references to shared services only.

The page's submit is one event: the message text goes from the textbox straight into :meth:`respond`
(no ``gr.State`` holds it) and is checked (empty, length, rate) before anything else. A refusal is a
notice above the message box; the chat and memory are untouched and the text stays in the box. Every
path ends with the box back on Send; the page then resets Gradio's stored copy of the box's value with
:func:`ready_box` (an update without a value: the text stays on screen, the server's copy is emptied).
A yield that puts text back into the box is always a handler's last (a later update that omits the
value is sent as a diff that removes it on the page).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import aclosing, asynccontextmanager
from typing import AsyncIterator

import gradio as gr

from agent.cmw_agent import TextDelta
from agent.hygiene import notice_message
from memory.conversation_memory import ConversationMemory, ConversationMemoryManager
from memory.session import Session
from memory.turn import TurnHandle
from security.admission import Admission, Busy
from security.rate_limit import RateLimiter, rate_limit_message
from settings import Settings
from ui.edge import SessionEdge, client_host
from ui.failures import SOMETHING_FAILED, failure_message, told_to_the_person, turn_failure
from ui.input_guard import clean_message, refusal_for
from ui.render import TurnView, render_transcript, user_message

log = logging.getLogger("cmw.chat")
# What a tab asks for when it cannot remember its conversation (storage denied in a cross-site frame).
LATEST_CONVERSATION = "@latest"
STREAM_LOST = ("The answer to your last message was cut off: the server answering it stopped. Your conversation "
               "is safe - send your message again.")
TAB_ONLY_NOTICE = ("Your browser keeps no cookies for this site, so this chat lives only in this tab: it stays "
                   "private, but it is gone when you close or reload the tab - allow cookies for this site (or "
                   "open the app in its own tab) to keep your conversations.")


def ready_box() -> gr.Textbox:
    """The message box ready for the next message. No value: the text on screen stays as it is, and
    Gradio's per-session copy of the box's value is replaced by an empty one."""
    return gr.Textbox(interactive=True, submit_btn=True, stop_btn=False)


def busy_box() -> gr.Textbox:
    """The message box while a turn runs: emptied (the text is in the chat), Stop instead of Send."""
    return gr.Textbox(value="", interactive=False, submit_btn=False, stop_btn=True)


def notice(text: str | None) -> gr.Markdown:
    """The line above the message box: why a message was not sent, or what failed. Hidden when None."""
    return gr.Markdown(value=text, visible=True) if text else gr.Markdown(value="", visible=False)


class ChatHandlers:
    def __init__(self, edge: SessionEdge, manager: ConversationMemoryManager, settings: Settings):
        self._edge = edge
        self._manager = manager
        self._settings = settings
        shared = settings.redis_url  # None: counted per worker
        self._owner_limit = RateLimiter(settings.rate_limit_per_owner, redis_url=shared, name="chat-owner")
        self._ip_limit = RateLimiter(settings.rate_limit_per_ip, redis_url=shared, name="chat-address")
        self._admission = Admission(settings.concurrency_limit, settings.queue_max)

    async def _session_for(self, request, conversation_ref: str | None) -> Session:
        """Resolve the session and follow the tab's conversation reference, if it is this owner's."""
        return await self._edge.resolve_showing(request, conversation_ref)

    async def _refusal(self, session: Session, request, text: str) -> str | None:
        """Why this message is not run (empty, too long, too fast), or None. Nothing refused is stored."""
        return (refusal_for(text, max_chars=self._settings.max_message_chars)
                or await self._rate_refusal(session, request))

    async def _rate_refusal(self, session: Session, request) -> str | None:
        """Too many messages from this owner or this address: the sentence to show; else the message counts."""
        wait = await self._owner_limit.wait_seconds(session.principal)
        if wait:
            return rate_limit_message(self._owner_limit.limit, wait)
        wait = await self._ip_limit.wait_seconds(self._edge.credentials.fingerprint(client_host(request)))
        if wait:
            return rate_limit_message(self._ip_limit.limit, wait)
        return None

    # -- one turn ------------------------------------------------------------------------------
    async def _run_turn(self, session: Session, text: str) -> AsyncIterator[TurnView]:
        """Stream one turn as successive views, at most one every ``stream_interval`` seconds.

        The turn's cancel handle exists from here on, so Stop cancels it while it waits for a process-wide
        slot (bounded waiting, else a busy answer) or for its conversation's lock.
        """
        view = TurnView()
        handle = session.begin_turn()
        try:
            async with self._admission.slot():
                async with aclosing(self._locked_turn(session, text, view, handle)) as updates:
                    async for update in updates:
                        yield update
        except Busy as busy:  # nothing was stored: the message is refused like any other
            view.refusal = str(busy)
            yield view
        finally:
            session.end_turn(handle)

    @asynccontextmanager
    async def _locked_conversation(self, session: Session):
        """The session's current conversation, locked; one deleted meanwhile is replaced by a new one."""
        async with session.agent.locked_current(session.principal) as conversation:
            yield conversation

    async def _locked_turn(self, session: Session, text: str, view: TurnView,
                           handle: TurnHandle) -> AsyncIterator[TurnView]:
        async with self._locked_conversation(session) as conversation:
            message_id = uuid.uuid4().hex
            if not await self._manager.record_turn(conversation, session.principal, session.fingerprint, text):
                log.warning("session %s: refused a turn on a conversation it does not own", session.fingerprint)
                session.agent.start_new(session.principal)
                view.apply_failure(SOMETHING_FAILED)
                yield view
                return
            session.touch()
            if handle.cancelled:  # Stop pressed while the turn waited: keep the message, answer nothing
                await conversation.settle_interrupted_turn(text, message_id, "")
                yield view
                return
            conversation.running = handle
            settled = False
            try:
                last_yield = 0.0
                events = session.agent.stream_turn(conversation, text, session.turn_context(conversation), message_id)
                async for event in until_cancelled(events, handle):
                    view.apply(event)
                    now = time.monotonic()
                    if now - last_yield >= self._settings.stream_interval or not isinstance(event, TextDelta):
                        last_yield = now
                        yield view
                if handle.cancelled:  # Stop, or the conversation was deleted
                    await conversation.settle_interrupted_turn(text, message_id, view.answer)
                    view.mark_stopped()
                    log.info("session %s: turn stopped after %d chars", session.fingerprint, len(view.answer))
                settled = True
            except Exception as error:  # memory keeps what was shown (marked as stopped), then a notice
                failure = turn_failure(error)
                if failure.kind == "unknown":
                    log.exception("session %s: turn failed", session.fingerprint)
                else:  # the operator's detail; the person gets the sentence
                    log.warning("session %s: turn failed (%s): %s: %s", session.fingerprint, failure.kind,
                                type(error).__name__, error)
                settled = True
                await conversation.settle_interrupted_turn(text, message_id, view.answer, notice_message(failure))
                view.apply_failure(failure.sentence)
            finally:
                conversation.running = None
                if not settled:  # cancelled, or closed from outside (tab closed, Gradio dropped the run)
                    await asyncio.shield(conversation.settle_interrupted_turn(text, message_id, view.answer))
            session.touch()
            yield view

    async def stop(self, request: gr.Request):
        """The Stop button: cancel this session's turns, running or still waiting; what was shown stays."""
        session = self._edge.existing(request)
        if session is not None:
            session.stop_turns()

    # -- browser events ------------------------------------------------------------------------
    async def load(self, conversation_ref: str, request: gr.Request):
        """Page load (and reload): show the conversation this tab was showing, if it is this owner's; a tab
        that cannot remember it (a cross-site frame) continues this owner's most recent conversation."""
        with told_to_the_person(log, "page load"):
            if conversation_ref == LATEST_CONVERSATION:
                session = await self._edge.resolve(request)
                await session.agent.open_latest(session.principal)
            else:
                session = await self._session_for(request, conversation_ref)
            # Several workers: a turn left by a stopped one is settled (marked interrupted) here.
            settled = await session.conversation.settle_if_abandoned()
            messages = (await session.conversation.load()).messages
            # The page reloads when the worker streaming its answer dies (Gradio sees a new server): say why
            # the answer is missing, whether the turn was settled just now or its worker's lease has not
            # expired yet (a worker on another machine: memory/leases.py).
            cut = settled or await session.conversation.cut_short_elsewhere(messages)
        told = [STREAM_LOST] * cut + [TAB_ONLY_NOTICE] * self._edge.tab_only(request)
        return render_transcript(messages), session.conversation.conversation_id, notice(" ".join(told) or None)

    async def respond(self, message: str, conversation_ref: str, request: gr.Request):
        """Chat submit from the page: yields (chat, conversation reference, message box, notice)."""
        text = clean_message(message)
        try:
            session = await self._session_for(request, conversation_ref)
            refusal = await self._refusal(session, request, text)
            if refusal:  # not a turn: chat and memory untouched, the text stays in the box
                yield gr.skip(), gr.skip(), ready_box(), notice(refusal)
                return
            await session.conversation.settle_if_abandoned()  # several workers: a turn left by a stopped one
            history = render_transcript((await session.conversation.load()).messages)
        except gr.Error:
            raise
        except Exception as error:
            log.exception("chat submit failed before the turn")
            yield gr.skip(), gr.skip(), ready_box(), notice(failure_message(error))
            return
        async for update in self._answer(session, text, history):
            yield update

    async def example(self, conversation_ref: str, evt: gr.SelectData, request: gr.Request):
        """An example chip in the empty chat: sent as if it had been typed."""
        value = evt.value if isinstance(evt.value, dict) else {"text": evt.value}
        async for update in self.respond(str(value.get("text") or ""), conversation_ref, request):
            yield update

    async def _answer(self, session: Session, text: str, history: list):
        """Show the message, stream the turn, end with the box on Send, whatever happens."""
        shown = history + [user_message(text)]
        yield shown, session.conversation.conversation_id, busy_box(), notice(None)
        try:
            async with aclosing(self._run_turn(session, text)) as views:
                async for view in views:
                    if view.refusal:  # busy: nothing was stored; the message goes back into the box
                        yield from_refusal(history, session, text, view.refusal)
                        return
                    yield shown + view.messages, session.conversation.conversation_id, gr.skip(), gr.skip()
        except Exception as error:  # the store failed around the turn: nothing is sure to be kept
            log.exception("session %s: turn failed outside the model", session.fingerprint)
            yield from_refusal(history, session, text, failure_message(error))
            return
        yield gr.skip(), gr.skip(), ready_box(), gr.skip()

    async def retry(self, conversation_ref: str, request: gr.Request):
        """Retry: forget the last turn, in memory as on screen, and answer its message again. Checked
        against the rate limits first, so a refused retry loses nothing."""
        try:
            session = await self._session_for(request, conversation_ref)
            refusal = await self._rate_refusal(session, request)
            if refusal:
                yield gr.skip(), gr.skip(), ready_box(), notice(refusal)
                return
            async with self._locked_conversation(session) as conversation:
                text = await conversation.drop_last_turn()
            history = render_transcript((await session.conversation.load()).messages)
        except gr.Error:
            raise
        except Exception as error:
            log.exception("retry failed before the turn")
            yield gr.skip(), gr.skip(), ready_box(), notice(failure_message(error))
            return
        if not text:
            yield history, session.conversation.conversation_id, ready_box(), notice(None)
            return
        async for update in self._answer(session, text, history):
            yield update

    async def undo(self, conversation_ref: str, request: gr.Request):
        """Undo: forget the last turn and put its message back in the textbox."""
        with told_to_the_person(log, "undo"):
            session = await self._session_for(request, conversation_ref)
            async with self._locked_conversation(session) as conversation:
                text = await conversation.drop_last_turn()
                history = render_transcript((await conversation.load()).messages)
        return history, text or "", notice(None)  # the page then resets Gradio's copy of the box (ready_box)

    async def clear(self, request: gr.Request):
        """Clear (and New chat): start a new, empty conversation; earlier ones stay in the list."""
        with told_to_the_person(log, "new chat"):
            session = await self._edge.resolve(request)
            return [], session.agent.start_new(session.principal).conversation_id

    async def unload(self, request: gr.Request):
        """The tab closed: release its live objects and Gradio's state for it (the last message typed
        included). Stored conversations are untouched; the hash stays its owner's until it idles out."""
        session = self._edge.existing(request)
        if session is not None:
            self._edge.registry.close(request.session_hash)

    # -- public API: /chat -----------------------------------------------------------------
    async def api_chat(self, message: str, request: gr.Request):
        """``/chat``: one message in, the reply text streamed out. One gradio_client.Client = one session.
        A refusal or a failure is the reply: one sentence saying what to do."""
        with told_to_the_person(log, "/chat"):
            session = await self._edge.resolve(request)
            text = clean_message(message)
            refusal = await self._refusal(session, request, text)
            if refusal:
                yield refusal
                return
            sent = None
            async for view in self._run_turn(session, text):
                if view.refusal:
                    yield view.refusal
                    return
                reply = view.reply
                if reply != sent:  # tool events leave the text unchanged: nothing new to send
                    sent = reply
                    yield sent
            if sent is None:
                yield ""


def from_refusal(history: list, session: Session, text: str, sentence: str):
    """The chat as it was, the message back in the box (ready to send again), and why."""
    box = gr.Textbox(value=text, interactive=True, submit_btn=True, stop_btn=False)
    return history, session.conversation.conversation_id, box, notice(sentence)


_DONE = object()
_STOPPED = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


async def until_cancelled(events: AsyncIterator, handle: TurnHandle) -> AsyncIterator:
    """``events`` until ``handle`` is cancelled: Stop ends the turn at once, even while the model is silent.

    The stream is consumed in one task of its own (LangGraph keeps per-run context in that task) and
    handed over through a queue; a second task puts a stop mark in the same queue when the handle is
    cancelled, so each event costs one queue hand-over (no task or wait per event). Cancelling the
    handle also cancels the stream's task.
    """
    queue: asyncio.Queue = asyncio.Queue()

    async def pump() -> None:
        try:
            async with aclosing(events):
                async for event in events:
                    queue.put_nowait(event)
        except Exception as error:  # handed to the consumer, which raises it in the turn
            queue.put_nowait(_Failed(error))
        finally:
            queue.put_nowait(_DONE)

    async def watch() -> None:
        await handle.wait()
        queue.put_nowait(_STOPPED)

    producer = asyncio.create_task(pump())
    stopped = asyncio.create_task(watch())
    try:
        while True:
            item = await queue.get()
            if item is _DONE or item is _STOPPED or handle.cancelled:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stopped.cancel()
        if not producer.done():
            producer.cancel()
        await asyncio.gather(producer, stopped, return_exceptions=True)
