"""Several workers on one store (memory/leases.py): two app instances in this process with CMW_WORKERS=2 on
the same data directory (so the same server key) and the same database - SQLite and, with
TEST_DATABASE_URL, PostgreSQL - driven in-process like tests/test_conversation_locks.py.

A "killed" worker is one whose lease row stays behind, unreleased, until it expires, and whose turn stopped
mid-stream without settling (its graph run cancelled under it, as a SIGKILL leaves it).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import closing

import gradio as gr
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

import agent.offline_model as offline_model
from agent.hygiene import NOTICE, is_notice
from app_ng import build_app
from memory.leases import Leases, LeaseBusy, conversation_lease, expire_leases_of_process
from memory.store import SQLITE_FILE
from tests_support import handler_request
from ui.chat_handler import STREAM_LOST, ChatHandlers
from ui.edge import SessionEdge
from ui.failures import ANSWER_INTERRUPTED, CONVERSATION_BUSY

WAIT = 30  # seconds; any bounded wait here takes well under it
KILLED = "killed-worker"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def workers(request, make_settings):
    """Two workers (app instances) on one store, as ``app_ng.py --workers 2`` runs them."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    apps = [build_app(make_settings(stream_interval=0.0, database_url=url, offline_token_delay=0.003, workers=2))
            for _ in range(2)]
    try:
        assert all(app.manager.leases is not None for app in apps), \
            "build_app must give the manager leases=Leases.for_workers(store, settings.workers)"
        yield apps
    finally:
        for app in apps:
            await app.manager.store.close()


class Person:
    """One owner (one cookie, valid on both workers) with a tab on each worker."""

    def __init__(self, apps):
        token = apps[0].credentials.mint()
        self.owner = apps[0].credentials.owner_of(token)
        assert all(app.credentials.owner_of(token) == self.owner for app in apps)  # the key is shared
        self.chats = [ChatHandlers(SessionEdge(app.registry, app.credentials), app.manager, app.settings)
                      for app in apps]

    def tab(self, worker: int):
        return handler_request(f"tab-{worker}-{self.owner[:6]}", self.owner)

    async def say(self, worker: int, text: str) -> str:
        replies = [r async for r in self.chats[worker].api_chat(text, self.tab(worker))]
        return replies[-1]

    async def show(self, worker: int, conversation_id: str) -> list:
        """Page load on ``worker`` showing ``conversation_id``: the chat as rendered."""
        chat, shown_id, _ = await self.chats[worker].load(conversation_id, self.tab(worker))
        assert shown_id == conversation_id
        return chat


async def started_conversation(apps, text: str = "My name is Ada") -> tuple[Person, str]:
    """A person who said ``text`` on worker 0, with worker 1's tab showing the same conversation."""
    person = Person(apps)
    await person.say(0, text)
    [record] = await apps[0].manager.store.list_for_owner(person.owner)
    await person.show(1, record.id)
    return person, record.id


async def plant_lease(app, name: str, holder: str, expires_in: float) -> None:
    """A lease row as a worker leaves it: unreleased, expiring ``expires_in`` seconds from now."""
    await app.manager.leases.open()
    async with app.manager.store.transaction() as tx:
        await tx.change("INSERT INTO cmw_leases (name, holder, expires_at) VALUES (?, ?, ?)",
                        name, holder, time.time() + expires_in)


async def lease_rows(app) -> list[tuple]:
    return await app.manager.store._rows("SELECT name, holder FROM cmw_leases ORDER BY name")


async def transcript(app, conversation_id: str):
    return await app.manager.entry(conversation_id).load()


def turns(messages) -> list[list]:
    """The stored messages cut at every message the person typed."""
    cut = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage)] + [len(messages)]
    return [messages[a:b] for a, b in zip(cut, cut[1:])]


async def test_turns_of_one_conversation_on_two_workers_never_interleave(workers):
    person, conversation_id = await started_conversation(workers, "My name is Race")
    sent = [(worker, n) for n in range(1, 7) for worker in (0, 1)]
    await asyncio.wait_for(asyncio.gather(*(person.say(w, f"Add {n} tea to my cart") for w, n in sent)), WAIT)

    stored = await transcript(workers[1], conversation_id)
    later = turns(stored.messages)[1:]
    assert len(later) == len(sent)
    for turn in later:  # each message, then its own call, result and answer - nothing of another turn between
        asked = int(turn[0].text.split()[1])
        assert [type(m) for m in turn] == [HumanMessage, AIMessage, ToolMessage, AIMessage], turn
        assert turn[1].tool_calls[0]["args"]["quantity"] == asked and turn[2].tool_call_id == turn[1].tool_calls[0]["id"]
        assert turn[3].text == turn[2].text and f"Added {asked} ×" in turn[3].text
    assert sorted(int(t[0].text.split()[1]) for t in later) == sorted(n for _, n in sent)
    assert stored.cart["tea"]["qty"] == 2 * sum(range(1, 7))
    assert await lease_rows(workers[0]) == []  # every lease was released


async def test_a_killed_workers_lease_delays_the_next_turn_until_it_expires(workers):
    person, conversation_id = await started_conversation(workers, "My name is Kenny")
    expires_at = time.time() + 1.5
    await plant_lease(workers[0], conversation_lease(conversation_id), KILLED, expires_in=1.5)

    assert await asyncio.wait_for(person.say(1, "What's my name?"), WAIT) == "Your name is Kenny."
    answered = time.time()
    assert expires_at - 0.05 <= answered < expires_at + 5, answered - expires_at  # waited for the expiry, no longer
    messages = (await transcript(workers[0], conversation_id)).messages
    assert not any(is_notice(m) for m in messages)  # its last turn had finished: nothing to settle
    assert [m.text for m in messages if isinstance(m, HumanMessage)] == ["My name is Kenny", "What's my name?"]
    assert await lease_rows(workers[0]) == []


async def kill_mid_turn(app, conversation_id: str, how: str) -> None:
    """What a worker SIGKILLed in the middle of a turn leaves in the checkpoint: the person's message and
    no answer (killed while streaming), or a tool call without its result (killed before the tool ran)."""
    entry = app.manager.entry(conversation_id)
    graph = await app.manager.runtime.graph()
    if how == "streaming":
        async def stream() -> None:
            async for _ in graph.astream({"messages": [HumanMessage("Count to 300", id="dead")]}, entry.config,
                                         stream_mode=["messages"]):
                pass

        running = asyncio.create_task(stream())
        await asyncio.sleep(0.1)  # a few words streamed, none stored
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    else:
        call = {"name": "add_to_cart", "args": {"item": "tea", "quantity": 2}, "id": "call_dead", "type": "tool_call"}
        await graph.aupdate_state(entry.config, {"messages": [HumanMessage("Add 2 tea to my cart", id="dead"),
                                                              AIMessage(content="", tool_calls=[call])]},
                                  as_node="model")
    assert (await graph.aget_state(entry.config)).next  # the graph would go on: the turn is half-done


@pytest.mark.parametrize("how", ["streaming", "tool_call"])
async def test_a_turn_left_half_done_is_settled_with_a_notice_the_model_never_sees(workers, monkeypatch, how):
    person, conversation_id = await started_conversation(workers)
    await kill_mid_turn(workers[0], conversation_id, how)
    await plant_lease(workers[0], conversation_lease(conversation_id), KILLED, expires_in=-1)  # already expired
    seen = []
    decide = offline_model.decide
    monkeypatch.setattr(offline_model, "decide", lambda messages, tools=(): seen.append(list(messages)) or
                        decide(messages, tools))

    assert "Added 3 ×" in await asyncio.wait_for(person.say(1, "Add 3 tea to my cart"), WAIT)

    stored = await transcript(workers[0], conversation_id)
    dead, settled_notice, *_ = turns(stored.messages)[1]
    assert dead.id == "dead" and is_notice(settled_notice) and settled_notice.response_metadata[NOTICE] == "interrupted"
    assert settled_notice.text == ANSWER_INTERRUPTED
    assert len(turns(stored.messages)[1]) == 2  # the unanswered tool call is gone, nothing else was half-written
    assert stored.cart == {"tea": stored.cart["tea"]} and stored.cart["tea"]["qty"] == 3  # the dead call never ran
    assert seen and not any(is_notice(m) for messages in seen for m in messages)
    assert any(m.id == "dead" for m in seen[0])  # the person's message stays in the model's view
    chat = await person.show(1, conversation_id)
    assert sum(ANSWER_INTERRUPTED in str(m.content) for m in chat) == 1  # rendered like every other notice


async def test_page_load_settles_a_turn_whose_worker_is_gone_but_not_one_still_running(workers):
    person, conversation_id = await started_conversation(workers)
    await kill_mid_turn(workers[0], conversation_id, "streaming")
    name = conversation_lease(conversation_id)
    await plant_lease(workers[0], name, KILLED, expires_in=30)  # live: the turn may still be running there

    chat = await person.show(1, conversation_id)
    assert chat[-1].role == "user" and not any(ANSWER_INTERRUPTED in str(m.content) for m in chat)
    async with workers[0].manager.store.transaction() as tx:  # ... then its worker stops renewing
        await tx.change("UPDATE cmw_leases SET expires_at = ? WHERE name = ?", time.time() - 1, name)
    chat = await person.show(1, conversation_id)
    assert ANSWER_INTERRUPTED in str(chat[-1].content)
    assert await lease_rows(workers[0]) == []
    await person.show(0, conversation_id)  # settled once: a second look changes nothing
    assert sum(is_notice(m) for m in (await transcript(workers[0], conversation_id)).messages) == 1


async def test_the_persons_message_is_stored_before_the_first_word_of_the_answer_is_shown(workers, monkeypatch):
    """A worker can be killed as soon as the first tokens show: by then the message must be in the store
    (the graph's own input checkpoint is written in the background while the model streams; slowed here)."""
    person, conversation_id = await started_conversation(workers)
    saver = await workers[0].manager.store.checkpointer()
    aput = saver.aput

    async def slow_aput(*args, **kwargs):  # a store busy with other people's writes
        await asyncio.sleep(0.5)
        return await aput(*args, **kwargs)

    monkeypatch.setattr(saver, "aput", slow_aput)
    replies = person.chats[0].api_chat("Count to 300", person.tab(0))
    try:
        first = await asyncio.wait_for(anext(replies), WAIT)
        assert first.startswith("1")
        seen_elsewhere = await transcript(workers[1], conversation_id)  # another worker's own connection
        asked = [m.text for m in seen_elsewhere.messages if isinstance(m, HumanMessage)]
        assert asked == ["My name is Ada", "Count to 300"]
    finally:
        await replies.aclose()


async def test_a_stopped_process_s_leases_expire_at_once_and_the_page_says_its_answer_was_cut(workers):
    """The supervisor expires the leases of a worker it saw exit (deploy/supervisor.py): the person's page,
    reloaded on another worker, settles the cut turn at once and says why, without waiting for the TTL."""
    person, conversation_id = await started_conversation(workers)
    await kill_mid_turn(workers[0], conversation_id, "streaming")
    name = conversation_lease(conversation_id)
    await plant_lease(workers[0], name, "424242-dead", expires_in=300)  # would block for five minutes
    await plant_lease(workers[0], "conversation:another", "4242420-alive", expires_in=300)
    settings = workers[0].settings

    assert expire_leases_of_process(424242, database_url=settings.database_url,
                                    sqlite_path=settings.data_dir / SQLITE_FILE) == 1
    chat, shown_id, notice_update = await person.chats[1].load(conversation_id, person.tab(1))
    assert shown_id == conversation_id and ANSWER_INTERRUPTED in str(chat[-1].content)
    assert STREAM_LOST in str(notice_update.value)
    assert await lease_rows(workers[0]) == [("conversation:another", "4242420-alive")]  # another pid's stays
    chat, _, notice_update = await person.chats[1].load(conversation_id, person.tab(1))
    assert STREAM_LOST not in str(notice_update.value)  # said once
    assert await asyncio.wait_for(person.say(1, "What's my name?"), WAIT) == "Your name is Ada."


def test_expiring_a_process_s_leases_before_any_lease_was_taken_does_nothing(tmp_path):
    assert expire_leases_of_process(1, database_url=None, sqlite_path=tmp_path / SQLITE_FILE) == 0


async def test_a_conversation_held_too_long_elsewhere_is_refused_with_a_sentence(workers):
    person, conversation_id = await started_conversation(workers)
    await plant_lease(workers[0], conversation_lease(conversation_id), "another-live-worker", expires_in=60)
    workers[1].manager.leases.wait_limit = 0.3

    with pytest.raises(gr.Error, match="still busy") as refused:
        await asyncio.wait_for(person.say(1, "What's my name?"), WAIT)
    assert str(refused.value.message) == CONVERSATION_BUSY
    assert [m.text for m in (await transcript(workers[0], conversation_id)).messages
            if isinstance(m, HumanMessage)] == ["My name is Ada"]


async def test_a_conversation_deleted_on_one_worker_stays_deleted_on_the_other(workers):
    person, conversation_id = await started_conversation(workers, "My name is Gone")
    assert await workers[0].manager.delete(conversation_id, person.owner)

    assert "don't know" in await person.say(1, "What's my name?")  # worker 1's tab still showed it
    [fresh] = await workers[1].manager.store.list_for_owner(person.owner)
    assert fresh.id != conversation_id  # a new conversation, not the deleted one brought back
    assert (await transcript(workers[0], conversation_id)).messages == []


async def test_a_living_holder_keeps_its_lease_past_the_ttl(workers):
    mine = Leases(workers[0].manager.store, ttl=0.6, renew_every=0.15)
    other = Leases(workers[1].manager.store)
    async with mine.hold("something") as lease:
        assert lease.taken_from is None
        for _ in range(8):  # 1.6 s: well past the TTL, renewed all along
            assert await other.take("something") is None
            await asyncio.sleep(0.2)
    assert await other.take("something") is not None  # released at once, not left to expire
    await other.release("something")


async def test_the_retention_sweeper_runs_in_one_worker_at_a_time(workers, monkeypatch):
    person = Person(workers)
    store = workers[0].manager.store
    for tab in range(3):
        await person.chats[0].clear(person.tab(0))
        await person.say(0, f"My name is Old{tab}")
    old = time.time() - 40 * 86400
    for record in await store.list_for_owner(person.owner):
        await store.record_turn(record.id, person.owner, "x", "ignored", now=old)
    sweeps = []
    for worker, app in enumerate(workers):
        expire = app.manager.expire_untouched_since

        async def counted(cutoff, expire=expire, worker=worker):
            sweeps.append(worker)
            await asyncio.sleep(0.3)  # both sweeps certainly overlap
            return await expire(cutoff)

        monkeypatch.setattr(app.manager, "expire_untouched_since", counted)

    deleted = await asyncio.gather(*(app.retention.sweep_once() for app in workers))

    assert len(sweeps) == 1 and sorted(deleted) == [0, 3]
    assert await store.list_for_owner(person.owner) == []
    assert await workers[1 - sweeps[0]].retention.sweep_once() == 0 and len(sweeps) == 2  # free again after
    assert await lease_rows(workers[0]) == []


async def test_one_worker_takes_no_lease_and_writes_nothing_for_it(make_settings):
    app = build_app(make_settings(stream_interval=0.0))
    try:
        assert app.settings.workers == 1 and app.manager.leases is None
        person = Person([app])
        await person.say(0, "My name is Solo")
        await person.say(0, "Add 2 tea to my cart")
        await person.chats[0].undo(None, person.tab(0))
        await app.retention.sweep_once()
        [record] = await app.manager.store.list_for_owner(person.owner)
        await person.show(0, record.id)
    finally:
        await app.manager.store.close()
    with closing(sqlite3.connect(app.manager.store.path)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "cmw_conversations" in tables and "cmw_leases" not in tables


async def test_waiting_gives_up_after_its_bound(workers):
    leases = Leases(workers[0].manager.store, wait_limit=0.2)
    await plant_lease(workers[0], "busy", "someone-else", expires_in=30)
    started = time.monotonic()
    with pytest.raises(LeaseBusy):
        async with leases.hold("busy"):
            pass
    assert time.monotonic() - started < 2
