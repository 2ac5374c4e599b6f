"""Session: everything the app holds about one user, in one object.

A session is created by the registry (the only per-user map in the process) and handed to the handler,
which passes it down explicitly. Nothing else in the process keeps per-user state.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable

from agent.cmw_agent import CmwAgent
from memory.conversation_memory import ConversationMemory, ConversationMemoryManager


@dataclass
class SessionStats:
    turns: int = 0
    stopped_turns: int = 0
    streamed_chars: int = 0


@dataclass(eq=False)
class Session:
    fingerprint: str  # keyed hash of the session key: safe for logs and the UI
    owner: str | None  # keyed hash of the owner cookie this session was bound to at first use
    memory: ConversationMemory
    agent: CmwAgent
    _manager: ConversationMemoryManager = field(repr=False)
    created_at: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.time)
    turn_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    stats: SessionStats = field(default_factory=SessionStats)
    released: bool = False
    username: str | None = None  # login name seen at first use when auth is on

    def belongs_to(self, owner: str | None, username: str | None) -> bool:
        return self.owner == owner and (self.username is None or self.username == username)

    def touch(self) -> None:
        self.last_active = time.time()

    async def start_new_conversation(self) -> None:
        """Leave the current conversation and begin an empty one (the UI's Clear)."""
        self._manager.release(self.memory)
        self.memory = self._manager.entry()
        self.agent = CmwAgent(self.agent.graph, self.memory)

    def release(self) -> None:
        """Free this session's live objects (on expiry, eviction or unload). Idempotent."""
        if self.released:
            return
        self.released = True
        self._manager.release(self.memory)


SessionFactory = Callable[[str, "str | None"], Session]


def make_session_factory(graph, manager: ConversationMemoryManager) -> SessionFactory:
    """Build sessions on the shared graph and memory manager."""

    def create(fingerprint: str, owner: str | None) -> Session:
        memory = manager.entry()
        return Session(fingerprint=fingerprint, owner=owner, memory=memory,
                       agent=CmwAgent(graph, memory), _manager=manager)

    return create
