"""Real model servers fail in many ways; after each, the same conversation's next turn answers normally.

Every test runs the app's real ChatOpenAI path against tests/fake_openai.py with one quirk or fault,
then checks three things: what the person was told (the one sentence of agent/model_errors.py, or the
cut/trim note), what the conversation stores (what was shown; a failure as a marked notice), and what
the model is sent next (the earlier turns, no notice, no null content, no dangling tool call).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from agent.hygiene import CUT, NOTICE
from agent.model_errors import SENTENCES
from app_ng import build_app
from fake_openai import FakeOpenAIServer
from tests_support import handler_request
from ui.chat_handler import ChatHandlers
from ui.edge import SessionEdge
from ui.render import CUT_NOTES, STOPPED_NOTE, TOOLS_OFF_NOTE, failure_message_bubble, render_transcript

NAME = "My name is Alice"


@pytest.fixture
def make_server(make_server):
    """The shared fake-server factory, streaming fast (2 ms per token) unless a test says otherwise."""
    return lambda **options: make_server(**{"token_delay": 0.002, **options})


class Chat:
    """The app in-process on a fake server; one tab of one owner."""

    def __init__(self, app):
        self.app = app
        self.handlers = ChatHandlers(SessionEdge(app.registry, app.credentials), app.manager, app.settings)
        self.owner = app.credentials.owner_of(app.credentials.mint())

    def request(self):
        return handler_request("tab-1", self.owner)

    async def say(self, text: str) -> str:
        replies = [r async for r in self.handlers.api_chat(text, self.request())]
        return replies[-1]

    async def stored(self) -> list:
        return (await self.app.registry.peek("tab-1").conversation.load()).messages


@pytest.fixture
async def make_chat(make_settings):
    apps = []

    async def make(server: FakeOpenAIServer, **changes) -> Chat:
        settings = make_settings(**{"openai_api_key": "test-key", "openai_base_url": server.base_url,
                                    "model_name": "fake-model", "stream_interval": 0.0, "model_timeout": 5.0,
                                    "model_chunk_timeout": 5.0, **changes})
        apps.append(await asyncio.to_thread(build_app, settings))  # the start-up probe is blocking I/O
        return Chat(apps[-1])

    try:
        yield make
    finally:
        for app in apps:
            await app.manager.store.close()


def sent_to_model(body: dict) -> list[tuple[str, str | None]]:
    """(role, content) of every message of a request, the system prompt left out."""
    return [(m["role"], m.get("content")) for m in body["messages"] if m["role"] != "system"]


async def assert_next_turn_is_normal(chat: Chat, server: FakeOpenAIServer, faulty: str, shown: str = "") -> None:
    """The same conversation answers the next message, and the model sees the earlier turns, the words
    that were shown of the faulty one, and nothing else (no notice, no null content)."""
    assert await chat.say("What is my name?") == "Echo: What is my name?"
    expected = [("user", NAME), ("assistant", f"Echo: {NAME}"), ("user", faulty)]
    expected += [("assistant", shown)] if shown else []
    assert sent_to_model(server.requests[-1]) == expected + [("user", "What is my name?")]


FAILURES = {  # fault -> (what the person is told, the faults to queue: the client retries 5xx and 429 once)
    "hang": ("timeout", ("hang",)),
    "context": ("context", ("context",)),
    "empty": ("empty", ("empty",)),
    "401": ("auth", ("401",)),
    "404": ("model_not_found", ("404",)),
    "429": ("rate_limited", ("429", "429")),
    "500": ("server_error", ("500", "500")),
}


@pytest.mark.parametrize("fault", list(FAILURES))
async def test_a_failed_turn_is_a_marked_notice_and_the_next_turn_answers(make_server, make_chat, fault):
    server = make_server()
    chat = await make_chat(server, model_timeout=2.0)
    assert await chat.say(NAME) == f"Echo: {NAME}"
    kind, faults = FAILURES[fault]
    server.fail_next(*faults)

    assert await chat.say("Tell me a story") == SENTENCES[kind]

    stored = await chat.stored()
    assert [type(m) for m in stored[-2:]] == [HumanMessage, AIMessage]
    assert stored[-1].text == SENTENCES[kind] and stored[-1].response_metadata[NOTICE] == kind
    assert render_transcript(stored)[-1].content == failure_message_bubble(SENTENCES[kind]).content
    await assert_next_turn_is_normal(chat, server, "Tell me a story")


async def test_500_then_success_is_retried_before_anything_is_shown(make_server, make_chat):
    server = make_server()
    chat = await make_chat(server)
    assert await chat.say(NAME) == f"Echo: {NAME}"
    server.fail_next("500")
    assert await chat.say("Tell me a story") == "Echo: Tell me a story"
    assert len(server.requests) == 3  # the first, the failed one, its retry
    assert not any(m.response_metadata.get(NOTICE) for m in await chat.stored())


@pytest.mark.parametrize("fault, cut", [("length", "length"), ("no_finish", "server")])
async def test_a_cut_answer_is_marked_and_kept(make_server, make_chat, fault, cut):
    server = make_server()
    chat = await make_chat(server)
    assert await chat.say(NAME) == f"Echo: {NAME}"
    server.fail_next(fault)
    text = "Tell me a long story about seven brave apples"

    reply = await chat.say(text)
    shown = "Echo: Tell me a long"
    assert reply == f"{shown}\n\n{CUT_NOTES[cut]}"
    stored = await chat.stored()
    assert stored[-1].text == shown and stored[-1].response_metadata[CUT] == cut
    assert render_transcript(stored)[-1].content == f"{shown}\n\n{CUT_NOTES[cut]}"
    await assert_next_turn_is_normal(chat, server, text, shown)


async def test_a_stall_mid_answer_keeps_what_was_shown_and_says_why(make_server, make_chat):
    server = make_server()
    chat = await make_chat(server, model_chunk_timeout=1.0)
    assert await chat.say(NAME) == f"Echo: {NAME}"
    server.fail_next("stall")
    text = "Tell me a long story about seven brave apples"

    started = time.monotonic()
    reply = await chat.say(text)
    assert time.monotonic() - started < 4
    shown = "Echo: Tell me a long"
    assert reply == f"{shown}\n\n{SENTENCES['timeout']}"
    stored = await chat.stored()
    assert [m.text for m in stored[-2:]] == [shown, SENTENCES["timeout"]]
    assert stored[-2].response_metadata["stopped"] and stored[-1].response_metadata[NOTICE] == "timeout"
    assert [m.content for m in render_transcript(stored)[-2:]] == [
        f"{shown}\n\n{STOPPED_NOTE}", failure_message_bubble(SENTENCES["timeout"]).content]
    await assert_next_turn_is_normal(chat, server, text, shown)


async def test_an_unreadable_tool_call_runs_nothing_and_the_next_turn_answers(make_server, make_chat):
    server = make_server()
    chat = await make_chat(server)
    assert await chat.say(NAME) == f"Echo: {NAME}"
    server.fail_next("bad_tool_json")

    assert await chat.say("Add 2 apples to my cart") == SENTENCES["malformed_tool_call"]
    stored = await chat.stored()
    assert not any(isinstance(m, AIMessage) and (m.tool_calls or m.invalid_tool_calls) for m in stored)
    assert (await chat.app.registry.peek("tab-1").conversation.load()).cart == {}
    await assert_next_turn_is_normal(chat, server, "Add 2 apples to my cart")


async def test_repeated_tool_names_and_null_content_refusal(make_server, make_chat):
    """llama-cpp-python's quirks: the tool name in every chunk, and a 500 for ``content: null``."""
    server = make_server(quirks={"repeat_tool_name", "reject_null_content"})
    chat = await make_chat(server)
    assert await chat.say(NAME) == f"Echo: {NAME}"

    reply = await chat.say("Add 2 apples to my cart")
    assert reply.startswith("Done: Added 2 × Apples")
    call = server.requests[-1]["messages"][-2]
    assert call["content"] == "" and call["tool_calls"][0]["function"]["name"] == "add_to_cart"
    assert await chat.say("What is my name?") == "Echo: What is my name?"
    assert (await chat.app.registry.peek("tab-1").conversation.load()).cart["apple"]["qty"] == 2


async def test_stop_ends_a_hung_turn_within_a_second(make_server, make_chat):
    server = make_server()
    chat = await make_chat(server, model_timeout=30.0)
    assert await chat.say(NAME) == f"Echo: {NAME}"
    server.fail_next("hang")

    turn = asyncio.create_task(chat.say("Tell me a story"))
    await asyncio.sleep(0.5)
    assert not turn.done()
    stopped_at = time.monotonic()
    await chat.handlers.stop(chat.request())
    await asyncio.wait_for(turn, timeout=1.0)
    assert time.monotonic() - stopped_at < 1.0
    stored = await chat.stored()
    assert isinstance(stored[-1], HumanMessage) and stored[-1].text == "Tell me a story"
    await assert_next_turn_is_normal(chat, server, "Tell me a story")


async def test_a_server_that_rejects_tools_found_at_start_runs_without_them(make_server, make_chat):
    server = make_server(quirks={"reject_tools"})
    chat = await make_chat(server)
    assert "cart is unavailable" in chat.app.model_label
    assert await chat.say("Add 2 apples to my cart") == "Echo: Add 2 apples to my cart"
    assert "tools" not in server.requests[-1]
    assert "cart is unavailable" in server.requests[-1]["messages"][0]["content"]


async def test_a_server_that_rejects_tools_found_in_a_turn_runs_it_again_without_them(make_server, make_chat):
    server = make_server(quirks={"reject_tools"})
    chat = await make_chat(server, probe_model_server=False)
    reply = await chat.say("Add 2 apples to my cart")
    assert reply == f"{TOOLS_OFF_NOTE}\n\nEcho: Add 2 apples to my cart" or \
        reply == f"Echo: Add 2 apples to my cart\n\n{TOOLS_OFF_NOTE}"
    assert [("tools" in body) for body in server.requests] == [True, False]
    assert [m.text for m in await chat.stored()] == ["Add 2 apples to my cart", "Echo: Add 2 apples to my cart"]
    assert await chat.say("hello") == "Echo: hello"


async def test_a_long_conversation_keeps_working_and_says_what_left_the_models_view(make_server, make_chat):
    """A server with a small window (and a context error past it): the oldest turns leave the request."""
    server = make_server(context_tokens=1500)
    chat = await make_chat(server, max_output_tokens=100)
    assert chat.app.manager.runtime.server.context_tokens == 1500  # from the server's model list
    texts = [f"Turn {n}: " + " ".join(["lorem ipsum dolor sit amet"] * 14) for n in range(8)]
    replies = [await chat.say(text) for text in texts]

    assert [reply.split("\n\n")[0] for reply in replies] == [f"Echo: {text}" for text in texts], replies
    assert "no longer in the model's view" not in replies[0]
    assert "no longer in the model's view" in replies[-1]
    last = sent_to_model(server.requests[-1])
    assert last[-1] == ("user", texts[-1]) and ("user", texts[0]) not in last
    assert last[0][0] == "user"  # the window starts on a whole turn
    assert len([m for m in await chat.stored() if isinstance(m, HumanMessage)]) == 8  # memory keeps them all


async def test_a_server_gone_away_is_named_and_exports_set_the_notice_apart(make_server, make_chat):
    server = make_server()
    chat = await make_chat(server)
    assert await chat.say(NAME) == f"Echo: {NAME}"
    server.stop()
    assert await chat.say("Are you there?") == SENTENCES["unreachable"]

    from ui.privacy import PrivacyHandlers, _message_record

    records = [_message_record(m) for m in await chat.stored()]
    assert records[-1] == {"role": "assistant", "content": SENTENCES["unreachable"], "notice": "unreachable"}
    markdown = PrivacyHandlers._markdown({"exported_at": "now", "conversations": [{
        "title": "t", "created_at": "c", "updated_at": "u", "deleted_after": "d", "messages": records, "cart": {}}]})
    assert f"> **Could not answer.** {SENTENCES['unreachable']} _(a notice from the app; the model never saw it)_" \
        in markdown
    assert f"**Assistant:** {SENTENCES['unreachable']}" not in markdown


async def test_a_window_the_server_does_not_list_is_learned_from_its_refusal(make_server, make_chat):
    """llama-cpp-python lists no window: the first overflow is told in one sentence, and from then on the
    history is kept under what the server refused, so the same conversation's next turn answers."""
    server = make_server(context_tokens=1500, lists_context=False)
    chat = await make_chat(server, max_output_tokens=100)
    assert chat.app.manager.runtime.server.context_tokens == 8192  # unknown: the default
    texts = [f"Turn {n}: " + " ".join(["lorem ipsum dolor sit amet"] * 14) for n in range(10)]
    replies = [await chat.say(text) for text in texts]

    failed = [i for i, reply in enumerate(replies) if reply == SENTENCES["context"]]
    assert len(failed) == 1, replies
    assert all(reply.startswith(f"Echo: {texts[i]}") for i, reply in enumerate(replies) if i != failed[0])
    assert "no longer in the model's view" in replies[failed[0] + 1]
    assert chat.app.manager.runtime.server.context_tokens < 1500 + 100 + 700
