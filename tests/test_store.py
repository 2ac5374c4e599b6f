"""The durable store, on SQLite and (when TEST_DATABASE_URL is set) PostgreSQL: ownership, delete-all,
retention, export, concurrent turns on one conversation, and rehydration."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from app_ng import build_app
from memory.store import ConversationStore
from tests_support import count_rows
from tests_support import handler_request
from ui.chat_handler import ChatHandlers
from ui.edge import SessionEdge
from ui.privacy import PrivacyHandlers

@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def app(request, make_settings):
    """The app on each backend (PostgreSQL: a schema of this test's own); its store is closed after the
    test, pass or fail."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    app = build_app(make_settings(stream_interval=0.0, database_url=url))
    try:
        yield app
    finally:
        await app.manager.store.close()


class Person:
    """One owner (cookie) with any number of tabs, driving the handlers in-process."""

    def __init__(self, app):
        self.app = app
        self.token = app.credentials.mint()
        self.owner = app.credentials.owner_of(self.token)
        self.edge = SessionEdge(app.registry, app.credentials)
        self.chat = ChatHandlers(self.edge, app.manager, app.settings)
        self.privacy = PrivacyHandlers(self.edge, app.manager, app.settings)

    def request(self, tab: str):
        return handler_request(f"{tab}-{self.token[:6]}", self.owner)

    async def say(self, text: str, tab: str = "tab") -> str:
        replies = [r async for r in self.chat.api_chat(text, self.request(tab))]
        return replies[-1]

    async def conversation_ids(self) -> list[str]:
        return [r.id for r in await self.app.manager.store.list_for_owner(self.owner)]


async def test_each_owner_sees_only_their_conversations(app):
    alice, bob = Person(app), Person(app)
    await alice.say("My name is Alice")
    await bob.say("My name is Bob")
    store = app.manager.store
    [a] = await store.list_for_owner(alice.owner)
    [b] = await store.list_for_owner(bob.owner)
    assert a.title == "My name is Alice" and b.title == "My name is Bob"
    assert await store.get(a.id, bob.owner) is None
    assert not await store.rename(a.id, bob.owner, "stolen") and not await store.delete(a.id, bob.owner)
    assert await store.rename(a.id, alice.owner, "Renamed")
    assert [r.title for r in await store.list_for_owner(alice.owner)] == ["Renamed"]


async def test_delete_all_removes_exactly_this_owners_rows(app):
    alice, bob = Person(app), Person(app)
    for person, name in ((alice, "Alice"), (bob, "Bob")):
        await person.say(f"My name is {name}", tab="one")
        await person.say("Add 2 apples to my cart", tab="one")
        await person.say(f"My name is {name} again", tab="two")
    store = app.manager.store
    alice_ids, bob_ids = await alice.conversation_ids(), await bob.conversation_ids()
    assert len(alice_ids) == len(bob_ids) == 2
    before_bob = count_rows(store, bob_ids)
    assert all(before_bob.values()) and all(count_rows(store, alice_ids).values())
    chat, _ = await alice.privacy.delete_all(alice.request("one"))
    assert chat == []
    assert set(count_rows(store, alice_ids).values()) == {0}
    assert count_rows(store, bob_ids) == before_bob
    assert "don't know" in await alice.say("What's my name?", tab="one")
    assert await bob.say("What's my name?", tab="one") == "Your name is Bob."


async def test_retention_deletes_conversations_untouched_for_too_long(app):
    person = Person(app)
    await person.say("My name is Old")
    await person.say("My name is Fresh", tab="other")
    store = app.manager.store
    old, fresh = sorted(await store.list_for_owner(person.owner), key=lambda r: r.title == "My name is Fresh")
    now = fresh.updated_at
    await store.record_turn(old.id, person.owner, "x", "ignored", now=now - 31 * 86400)
    assert await app.retention.sweep_once(now=now) == 1
    assert [r.id for r in await store.list_for_owner(person.owner)] == [fresh.id]
    assert set(count_rows(store, [old.id]).values()) == {0}
    await app.retention.sweep_once(now=now + 29 * 86400)
    assert [r.id for r in await store.list_for_owner(person.owner)] == [fresh.id]
    assert await app.retention.sweep_once(now=now + 31 * 86400) == 1
    assert await store.list_for_owner(person.owner) == []


async def test_export_round_trips_this_owners_data_only(app):
    person, other = Person(app), Person(app)
    await person.say("My name is Exported")
    await person.say("Add 3 bananas to my cart")
    await other.say("My name is NotMine")
    paths, folder = await person.privacy.export(person.request("tab"))
    json_path, md_path = map(Path, paths)
    data = json.loads(json_path.read_text(encoding="utf-8"))
    [conversation] = data["conversations"]
    transcript = await app.manager.entry(conversation["id"]).load()
    assert [m["content"] for m in conversation["messages"]] == [m.text for m in transcript.messages]
    assert conversation["cart"] == transcript.cart and conversation["cart"]["banana"]["qty"] == 3
    markdown = md_path.read_text(encoding="utf-8")
    assert "**You:** My name is Exported" in markdown and "3 × Bananas" in markdown
    assert "NotMine" not in json_path.read_text(encoding="utf-8") + markdown
    exported = folder + "".join(paths) + json_path.read_text(encoding="utf-8") + markdown
    for secret in (person.request("tab").session_hash, person.token):  # raw ids never reach the export
        assert secret not in exported
    PrivacyHandlers.forget_export(folder)
    assert not Path(folder).exists()


async def test_concurrent_turns_on_one_conversation_lose_nothing(app):
    person = Person(app)
    await person.say("My name is Busy", tab="a")
    [conversation] = await person.conversation_ids()
    for tab in ("b", "c"):  # two more tabs of the same person open the same conversation
        await person.chat.load(conversation, person.request(tab))
    turns = [person.say(f"Add {n} tea to my cart", tab=tab) for n in range(1, 7) for tab in ("a", "b", "c")]
    await asyncio.gather(*turns)
    transcript = await app.manager.entry(conversation).load()
    humans = [m.text for m in transcript.messages if m.type == "human"]
    assert len(humans) == 1 + 18
    assert transcript.cart["tea"]["qty"] == 3 * sum(range(1, 7))


async def test_stores_are_created_on_first_use(tmp_path):
    store = ConversationStore(data_dir=tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    try:
        await store.open()
        assert store.path.exists()
    finally:
        await store.close()
