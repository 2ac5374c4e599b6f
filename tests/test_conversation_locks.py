"""One conversation, one lock: what other tabs of the same person do while a turn streams.

Delete-all from another tab, a switch in the same tab, Stop while a turn still waits for the lock, and a
stranger naming the tab's hash - each against a turn that is really streaming (in-process handlers on
the real store, SQLite and, with TEST_DATABASE_URL, PostgreSQL).
"""

from __future__ import annotations

import asyncio

import pytest

from app_ng import build_app
from tests_support import count_rows, handler_request
from ui.chat_handler import ChatHandlers
from ui.conversations import ConversationHandlers
from ui.edge import SessionEdge
from ui.privacy import PrivacyHandlers

WAIT = 30  # seconds; any bounded wait here takes well under one


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def app(request, make_settings):
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    app = build_app(make_settings(stream_interval=0.0, database_url=url, offline_token_delay=0.01))
    try:
        yield app
    finally:
        await app.manager.store.close()


class Person:
    """One owner (cookie) with tabs (session hashes), driving the handlers in-process."""

    def __init__(self, app, name: str = "p"):
        self.app = app
        self.owner = app.credentials.owner_of(app.credentials.mint())
        self.name = name
        edge = SessionEdge(app.registry, app.credentials)
        self.edge = edge
        self.chat = ChatHandlers(edge, app.manager, app.settings)
        self.conversations = ConversationHandlers(edge, app.manager)
        self.privacy = PrivacyHandlers(edge, app.manager, app.settings)

    def tab(self, tab: str):
        return handler_request(f"{self.name}-{tab}-{self.owner[:6]}", self.owner)

    def session(self, tab: str):
        return self.app.registry.peek(f"{self.name}-{tab}-{self.owner[:6]}")

    async def say(self, text: str, tab: str = "A") -> str:
        replies = [r async for r in self.chat.api_chat(text, self.tab(tab))]
        return replies[-1]

    def start(self, text: str, tab: str = "A") -> asyncio.Task:
        return asyncio.create_task(self.say(text, tab))


async def until(condition, what: str) -> None:
    async def poll():
        while not condition():
            await asyncio.sleep(0.005)
    try:
        await asyncio.wait_for(poll(), WAIT)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def test_delete_all_during_another_tabs_stream_leaves_nothing_and_the_next_message_starts_fresh(app):
    person = Person(app)
    await person.say("My name is Secret", tab="A")
    conversation = person.session("A").conversation
    await person.chat.load(conversation.conversation_id, person.tab("B"))  # tab B shows the same conversation
    streaming = person.start("Count to 400", tab="A")
    await until(lambda: conversation.running is not None, "tab A's turn to start streaming")

    await person.privacy.delete_all(person.tab("B"))
    shown = await asyncio.wait_for(streaming, WAIT)

    assert len(shown.split()) < 400  # the turn was stopped, not left to finish and write back
    counts = count_rows(app.manager.store, [conversation.conversation_id])
    assert set(counts.values()) == {0}, counts
    assert await app.manager.store.list_for_owner(person.owner) == []
    assert "don't know" in await person.say("What's my name?", tab="A")
    [fresh] = await app.manager.store.list_for_owner(person.owner)
    assert fresh.id != conversation.conversation_id


async def test_stop_pressed_while_a_turn_waits_for_the_lock_cancels_it(app):
    person = Person(app)
    await person.say("My name is Waiting", tab="A")
    conversation = person.session("A").conversation
    await person.chat.load(conversation.conversation_id, person.tab("B"))
    first = person.start("Count to 300", tab="A")
    await until(lambda: conversation.running is not None, "tab A's turn to start streaming")
    second = person.start("Count to 50", tab="B")
    await until(lambda: person.session("B").turns, "tab B's turn to be requested")
    assert conversation.lock.locked()

    await person.chat.stop(person.tab("B"))  # B's turn is still waiting for the conversation's lock
    await person.chat.stop(person.tab("A"))
    assert await asyncio.wait_for(second, WAIT) == ""  # not a single word of the 50
    await asyncio.wait_for(first, WAIT)
    transcript = await conversation.load()
    assert [m.text for m in transcript.messages if m.type == "human"][-1] == "Count to 50"
    assert transcript.messages[-1].type == "human"  # kept as asked, with no answer


async def test_switch_during_a_stream_keeps_each_conversation_whole(app):
    person = Person(app)
    await person.say("My name is First", tab="A")
    first = person.session("A").conversation
    await person.say("My name is Second", tab="B")
    second_id = person.session("B").conversation.conversation_id

    streaming = person.start("Count to 200", tab="A")
    await until(lambda: first.running is not None, "tab A's turn to start streaming")
    await person.conversations.switch(second_id, person.tab("A"))
    await asyncio.wait_for(streaming, WAIT)

    assert person.session("A").conversation.conversation_id == second_id
    assert [m.text for m in (await first.load()).messages if m.type == "human"] == ["My name is First", "Count to 200"]
    second = person.session("A").conversation
    assert [m.text for m in (await second.load()).messages if m.type == "human"] == ["My name is Second"]
    assert await person.say("What's my name?", tab="A") == "Your name is Second."


async def test_a_stranger_naming_the_tabs_hash_can_neither_stop_nor_unload_it(app):
    victim, stranger = Person(app, "v"), Person(app, "s")
    await victim.say("My name is Victim", tab="A")
    conversation = victim.session("A").conversation
    streaming = victim.start("Count to 100", tab="A")
    await until(lambda: conversation.running is not None, "the victim's turn to start streaming")
    spoofed = victim.tab("A")
    spoofed.request.state.cmw_caller = type(spoofed.request.state.cmw_caller)(stranger.owner)

    await victim.chat.stop(spoofed)
    await victim.chat.unload(spoofed)
    assert victim.session("A") is not None  # not released
    assert (await asyncio.wait_for(streaming, WAIT)).split()[-1] == "100"  # not stopped


async def test_record_turn_never_touches_another_owners_conversation(app):
    alice, bob = Person(app, "a"), Person(app, "b")
    await alice.say("My name is Alice")
    store = app.manager.store
    [before] = await store.list_for_owner(alice.owner)
    assert not await store.record_turn(before.id, bob.owner, "bobs-session", "hijack", now=before.updated_at + 60)
    assert await store.list_for_owner(alice.owner) == [before]
    assert await store.list_for_owner(bob.owner) == []
    entry = app.manager.entry(before.id, alice.owner)
    async with entry.lock:
        assert not await app.manager.record_turn(entry, bob.owner, "bobs-session", "hijack")
