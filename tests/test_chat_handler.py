"""The Gradio handlers in-process: session resolution, refusals, stop, clear/undo/retry, reload."""

from __future__ import annotations

import asyncio

import gradio as gr
import pytest
from langchain_core.messages import AIMessage, HumanMessage

from app_ng import build_app
from tests_support import handler_request
from ui.chat_handler import ChatHandlers
from ui.edge import NO_COOKIE_MESSAGE, NO_SESSION_MESSAGE, SessionEdge
from ui.input_guard import EMPTY_MESSAGE, too_long_message

OWNER_TOKEN = {}


@pytest.fixture
async def make_app(make_settings):
    """Factory: the app built in-process (every update streamed unless changed); the store of each app
    it built is closed after the test, pass or fail."""
    apps = []

    def make(**changes):
        apps.append(build_app(make_settings(**{"stream_interval": 0.0, **changes})))
        return apps[-1]

    try:
        yield make
    finally:
        for app in apps:
            await app.manager.store.close()


@pytest.fixture
def app(make_app):
    app = make_app()
    OWNER_TOKEN["value"] = app.credentials.mint()
    OWNER_TOKEN["credentials"] = app.credentials
    return app


def request(session_hash: str | None, token: str | None = "same-owner"):
    """What a handler sees after the HTTP guard resolved the owner cookie (None when absent or forged)."""
    token = OWNER_TOKEN["value"] if token == "same-owner" else token
    return handler_request(session_hash, OWNER_TOKEN["credentials"].owner_of(token))


def chat_handlers(app):
    return ChatHandlers(SessionEdge(app.registry, app.credentials), app.manager, app.settings)


async def api(app, handlers, text, session_hash="tab-1"):
    replies = [r async for r in handlers.api_chat(text, request(session_hash))]
    return replies[-1] if replies else None


@pytest.fixture
def handlers(app):
    return chat_handlers(app)


async def test_request_without_session_hash_is_refused_and_creates_nothing(app, handlers):
    for req in (None, request(None), request("")):
        with pytest.raises(gr.Error) as refused:
            await anext(handlers.api_chat("My name is Nobody", req))
        assert NO_SESSION_MESSAGE in str(refused.value)
    for token in (None, "forged.token"):
        with pytest.raises(gr.Error) as refused:
            await anext(handlers.api_chat("My name is Nobody", request("tab-x", token)))
        assert NO_COOKIE_MESSAGE in str(refused.value)
    assert len(app.registry) == 0


async def test_empty_and_oversized_messages_are_answered_and_not_stored(app, handlers):
    assert await api(app, handlers, "   \x00\u200b ") == EMPTY_MESSAGE
    limit = app.settings.max_message_chars
    assert await api(app, handlers, "x" * (limit + 1)) == too_long_message(limit)
    session = app.registry.peek("tab-1")
    assert (await session.conversation.load()).messages == []


async def test_control_characters_are_stripped_before_the_agent_sees_them(app, handlers):
    assert await api(app, handlers, "My name is Al\x07ice\u202e") == \
        "Nice to meet you, Alice! I'll remember your name in this conversation."


async def test_stop_leaves_memory_equal_to_what_was_shown(make_app):
    app = make_app(offline_token_delay=0.01)
    OWNER_TOKEN["value"] = app.credentials.mint()
    OWNER_TOKEN["credentials"] = app.credentials
    handlers = chat_handlers(app)
    await api(app, handlers, "My name is Stopper")
    shown = []
    ten_shown = asyncio.Event()

    async def consume():
        async for reply in handlers.api_chat("Count to 300", request("tab-1")):
            shown.append(reply)
            if len(shown) == 10:
                ten_shown.set()

    task = asyncio.create_task(consume())
    waiter = asyncio.create_task(ten_shown.wait())
    await asyncio.wait({task, waiter}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    task.cancel()
    assert ten_shown.is_set(), f"the turn ended or stalled after {len(shown)} replies"
    with pytest.raises(asyncio.CancelledError):
        await task
    visible = shown[-1]
    assert 0 < len(visible.split()) < 300
    messages = (await app.registry.peek("tab-1").conversation.load()).messages
    assert [type(m) for m in messages[-2:]] == [HumanMessage, AIMessage]
    assert messages[-2].text == "Count to 300" and messages[-1].text == visible
    assert await api(app, handlers, "What's my name?") == "Your name is Stopper."


async def test_turns_of_one_session_never_interleave(app, handlers):
    first, second = await asyncio.gather(api(app, handlers, "Count to 30"), api(app, handlers, "Count to 20"))
    assert first == " ".join(map(str, range(1, 31))) and second == " ".join(map(str, range(1, 21)))
    messages = (await app.registry.peek("tab-1").conversation.load()).messages
    assert [type(m) for m in messages] == [HumanMessage, AIMessage, HumanMessage, AIMessage]


async def test_undo_forgets_the_turn_and_its_cart_change(app, handlers):
    await api(app, handlers, "My name is Undone")
    await api(app, handlers, "Add 2 apples to my cart")
    chat, text, _ = await handlers.undo("", request("tab-1"))
    assert text == "Add 2 apples to my cart"
    assert [m.content for m in chat if m.role == "user"] == ["My name is Undone"]
    assert "empty" in await api(app, handlers, "Show my cart")
    await handlers.undo("", request("tab-1"))
    chat, text, _ = await handlers.undo("", request("tab-1"))
    assert text == "My name is Undone" and chat == []
    assert "don't know" in await api(app, handlers, "What's my name?")


async def test_retry_answers_again_without_duplicating(app, handlers):
    await api(app, handlers, "Add 2 apples to my cart")
    chats = [c[0] async for c in handlers.retry("", request("tab-1")) if isinstance(c[0], list)]
    final = chats[-1]
    assert [m.content for m in final if m.role == "user"] == ["Add 2 apples to my cart"]
    assert "2 × Apples at $0.50 = $1.00\nTotal: $1.00" in await api(app, handlers, "Show my cart")


async def test_clear_starts_an_empty_conversation(app, handlers):
    await api(app, handlers, "My name is Cleared")
    await api(app, handlers, "Add quinoa to my cart")
    chat, ref = await handlers.clear(request("tab-1"))
    assert chat == [] and ref == app.registry.peek("tab-1").conversation.conversation_id
    assert "don't know" in await api(app, handlers, "What's my name?")
    assert "empty" in await api(app, handlers, "Show my cart")


async def test_page_load_shows_only_this_tabs_conversation(app, handlers):
    await api(app, handlers, "My name is Loaded", session_hash="tab-1")
    ref = app.registry.peek("tab-1").conversation.conversation_id
    empty, new_ref, _ = await handlers.load("", request("tab-2"))
    assert empty == [] and new_ref != ref
    shown, same_ref, _ = await handlers.load(ref, request("tab-3"))  # a reload carries the tab's reference
    assert same_ref == ref
    assert [m.content for m in shown] == ["My name is Loaded",
                                          "Nice to meet you, Loaded! I'll remember your name in this conversation."]
    stranger, stranger_ref, _ = await handlers.load(ref, request("tab-4", app.credentials.mint()))
    assert stranger == [] and stranger_ref != ref


async def test_tool_bubbles_go_from_pending_to_done(app, handlers):
    statuses = []
    async for chat, *_ in handlers.respond("Add quinoa to my cart", "", request("tab-1")):
        if isinstance(chat, list):
            statuses += [m.metadata.get("status") for m in chat if m.metadata]
    assert "pending" in statuses and statuses[-1] == "done"
    final = [c async for c, *_ in handlers.respond("Show my cart", "", request("tab-1")) if isinstance(c, list)][-1]
    bubbles = [m for m in final if m.metadata]
    assert [b.metadata["title"] for b in bubbles] == ["Tool: add to cart", "Tool: view cart"]
    assert all(b.metadata["status"] == "done" for b in bubbles)
