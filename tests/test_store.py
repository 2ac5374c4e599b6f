"""The durable store, on SQLite and (when TEST_DATABASE_URL is set) PostgreSQL: ownership, delete-all,
retention, export, concurrent turns on one conversation, and rehydration."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from app_ng import build_app
from memory.store import ConversationStore
from security.owner import COOKIE_NAME
from ui.chat_handler import ChatHandlers
from ui.edge import SessionEdge
from ui.privacy import PrivacyHandlers

BACKENDS = ["sqlite", "postgres"]


def database_url(backend: str) -> str | None:
    if backend == "sqlite":
        return None
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        pytest.skip("PostgreSQL store tests need TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/test); "
                    ".ci/run sets it")
    return url


@pytest.fixture(params=BACKENDS)
def app(request, make_settings):
    app = build_app(make_settings(stream_interval=0.0, database_url=database_url(request.param)))
    return app


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
        return SimpleNamespace(session_hash=f"{tab}-{self.token[:6]}", cookies={COOKIE_NAME: self.token},
                               headers={}, client=None, username=None)

    async def say(self, text: str, tab: str = "tab") -> str:
        replies = [r async for r in self.chat.api_chat(text, self.request(tab))]
        return replies[-1]

    async def conversation_ids(self) -> list[str]:
        return [r.id for r in await self.app.manager.store.list_for_owner(self.owner)]


async def close(app):
    await app.manager.store.close()


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
    await close(app)


async def test_delete_all_removes_exactly_this_owners_rows(app):
    alice, bob = Person(app), Person(app)
    for person, name in ((alice, "Alice"), (bob, "Bob")):
        await person.say(f"My name is {name}", tab="one")
        await person.say("Add 2 apples to my cart", tab="one")
        await person.say(f"My name is {name} again", tab="two")
    store = app.manager.store
    alice_ids, bob_ids = await alice.conversation_ids(), await bob.conversation_ids()
    assert len(alice_ids) == len(bob_ids) == 2
    before_bob = await store.count_rows(bob_ids)
    assert all(before_bob.values()) and all((await store.count_rows(alice_ids)).values())
    chat, _ = await alice.privacy.delete_all(alice.request("one"))
    assert chat == []
    assert set((await store.count_rows(alice_ids)).values()) == {0}
    assert await store.count_rows(bob_ids) == before_bob
    assert "don't know" in await alice.say("What's my name?", tab="one")
    assert await bob.say("What's my name?", tab="one") == "Your name is Bob."
    await close(app)


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
    assert set((await store.count_rows([old.id])).values()) == {0}
    await app.retention.sweep_once(now=now + 29 * 86400)
    assert [r.id for r in await store.list_for_owner(person.owner)] == [fresh.id]
    assert await app.retention.sweep_once(now=now + 31 * 86400) >= 1  # a shared database may hold others' old rows
    assert await store.list_for_owner(person.owner) == []
    await close(app)


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
    assert Path(folder).name not in str(person.request("tab").session_hash)
    PrivacyHandlers.forget_export(folder)
    assert not Path(folder).exists()
    await close(app)


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
    await close(app)


async def test_stores_are_created_on_first_use(tmp_path):
    store = ConversationStore(data_dir=tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    await store.open()
    assert store.path.exists()
    await store.close()
