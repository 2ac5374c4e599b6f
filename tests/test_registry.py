"""SessionRegistry: TTL expiry, size eviction, atomic get-or-create, release on every exit path."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
from agent.catalog import load_catalog
from agent.cmw_agent import AgentRuntime
from agent.offline_model import OfflineChatModel
from memory.conversation_memory import ConversationMemoryManager
from memory.registry import SessionRegistry
from memory.session import make_session_factory
from memory.store import ConversationStore
from security.owner import OwnerCredentials


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def make_registry(tmp_path):
    """Factory: a registry over a fresh store; every store it made is closed after the test."""
    stores = []

    def make(maxsize: int = 100, ttl: float = 60.0, clock=None):
        store = ConversationStore(data_dir=tmp_path / "data")
        stores.append(store)
        runtime = AgentRuntime(OfflineChatModel(token_delay=0), load_catalog(), store.checkpointer)
        manager = ConversationMemoryManager(runtime, store)
        registry = SessionRegistry(make_session_factory(manager), maxsize=maxsize, ttl=ttl,
                                   fingerprint=OwnerCredentials(b"k" * 32).fingerprint, timer=clock or FakeClock())
        return registry, manager

    try:
        yield make
    finally:
        for store in stores:
            await store.close()


def test_same_key_same_session_other_key_other_session(make_registry):
    registry, _ = make_registry()
    a, a_again, b = (registry.get_or_create(key, owner="owner") for key in ("hash-a", "hash-a", "hash-b"))
    assert a is a_again
    assert a is not b
    assert a.conversation.conversation_id != b.conversation.conversation_id
    assert a.agent is not b.agent and a.conversation.lock is not b.conversation.lock
    assert a.fingerprint != b.fingerprint and "hash-a" not in a.fingerprint


def test_missing_key_is_refused_never_defaulted(make_registry):
    registry, _ = make_registry()
    for key in ("", None):
        with pytest.raises(ValueError):
            registry.get_or_create(key, owner="owner")
    assert len(registry) == 0


def test_idle_ttl_expiry_releases_session(make_registry):
    clock = FakeClock()
    registry, _ = make_registry(ttl=60, clock=clock)
    session = registry.get_or_create("k", owner="owner")
    clock.now += 59
    assert registry.get_or_create("k", owner="owner") is session  # access restarts the idle clock
    clock.now += 59
    assert registry.peek("k") is session
    clock.now += 61
    assert registry.peek("k") is None
    assert session.released
    fresh = registry.get_or_create("k", owner="owner")
    assert fresh is not session and fresh.conversation.conversation_id != session.conversation.conversation_id


def test_size_eviction_releases_oldest(make_registry):
    clock = FakeClock()
    registry, _ = make_registry(maxsize=3, clock=clock)
    sessions = []
    for i in range(5):
        clock.now += 1
        sessions.append(registry.get_or_create(f"k{i}", owner="owner"))
    assert len(registry) == 3
    assert [s.released for s in sessions] == [True, True, False, False, False]
    assert registry.peek("k0") is None and registry.peek("k4") is sessions[4]


async def _chat(session, manager, text):
    conversation = session.conversation
    async with conversation.lock:
        assert await manager.record_turn(conversation, session.principal, session.fingerprint, text)
        async for _ in session.agent.stream_turn(conversation, text, session.turn_context(conversation)):
            pass


async def test_eviction_frees_the_live_session_and_loses_nothing(make_registry):
    clock = FakeClock()
    registry, manager = make_registry(ttl=10, clock=clock)
    session = registry.get_or_create("k", owner="owner-a")
    session.principal = "owner-a"
    await _chat(session, manager, "My name is Evicted")
    await _chat(session, manager, "Add 2 apples to my cart")
    conversation = session.conversation.conversation_id
    ref = weakref.ref(session)
    del session
    clock.now += 11
    assert registry.expire() == 1
    gc.collect()
    assert ref() is None, "an evicted session is still referenced somewhere"
    again = registry.get_or_create("k", owner="owner-a")  # the same tab's next message
    again.principal = "owner-a"
    await again.agent.rehydrate(again.principal, again.fingerprint)
    assert again.conversation.conversation_id == conversation
    transcript = await again.conversation.load()
    assert transcript.messages[0].text == "My name is Evicted" and transcript.cart["apple"]["qty"] == 2
    await _chat(again, manager, "What's my name?")
    assert (await again.conversation.load()).messages[-1].text == "Your name is Evicted."


def test_get_or_create_is_atomic_under_threads(make_registry):
    registry, _ = make_registry(maxsize=1000)
    results: dict[str, list] = {f"k{i}": [] for i in range(20)}
    barrier = threading.Barrier(40, timeout=30)  # a thread that never arrives breaks it for all

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(20):
            key = f"k{(i + n) % 20}"
            results[key].append(registry.get_or_create(key, owner="owner"))

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert len(registry) == 20
    for key, seen in results.items():
        assert len(seen) == 40
        assert all(s is seen[0] for s in seen), f"{key} got more than one session"


def test_other_owner_gets_fresh_unregistered_session(make_registry):
    registry, _ = make_registry()
    mine = registry.get_or_create("k", owner="owner-a")
    theirs = registry.get_or_create("k", owner="owner-b")
    assert theirs is not mine and theirs.conversation.conversation_id != mine.conversation.conversation_id
    assert registry.get_or_create("k", owner="owner-a") is mine
    assert len(registry) == 1
