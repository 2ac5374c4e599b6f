"""Session: everything the app holds about one user, in one object.

A session is created by the registry (the only per-user map in the process) and handed to the handler,
which passes it down explicitly. Nothing else in the process keeps per-user state. Releasing a session
frees live objects only: its conversations are in the store and come back on the next request.
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
    fingerprint: str  # keyed hash of the session key: safe for logs, the UI and the store
    owner: str | None  # keyed hash of the owner cookie this session was bound to at first use
    agent: CmwAgent
    _manager: ConversationMemoryManager = field(repr=False)
    created_at: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.time)
    turn_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    stats: SessionStats = field(default_factory=SessionStats)
    released: bool = False
    username: str | None = None  # login name seen at first use when auth is on
    principal: str | None = None  # who owns stored data: owner (+ username); set by the handler
    stop_requested: bool = False  # set by the Stop button, read by the running turn
    rehydrated: bool = False  # whether the store was asked for this session's last conversation

    @property
    def memory(self) -> ConversationMemory:
        return self.agent.memory

    def belongs_to(self, owner: str | None, username: str | None) -> bool:
        return self.owner == owner and (self.username is None or self.username == username)

    def touch(self) -> None:
        self.last_active = time.time()

    async def rehydrate(self) -> None:
        """Once per live session: continue the conversation this session last used, if the store has one
        (after TTL or size eviction, the next request picks up exactly where the user left off)."""
        if self.rehydrated or not self.principal:
            return
        self.rehydrated = True
        entry = await self._manager.last_entry_of_session(self.principal, self.fingerprint)
        if entry is not None:
            self.agent.memory = entry

    async def open_conversation(self, conversation_id: str) -> bool:
        """Switch to a stored conversation of this session's principal; False for anyone else's."""
        if conversation_id == self.memory.conversation_id:
            return True
        entry = await self._manager.owned_entry(conversation_id, self.principal)
        if entry is None:
            return False
        self.agent.memory = entry
        self.rehydrated = True
        return True

    async def open_latest_conversation(self) -> bool:
        """Continue this principal's most recently updated conversation, if there is one."""
        entry = await self._manager.latest_entry_of_owner(self.principal)
        if entry is None:
            return False
        self.agent.memory = entry
        self.rehydrated = True
        return True

    def start_new_conversation(self) -> None:
        """Leave the current conversation (it stays stored) and begin an empty one."""
        self.agent.memory = self._manager.entry()
        self.rehydrated = True

    def release(self) -> None:
        """Free this session's live objects (expiry, eviction, unload). Stored data is untouched."""
        self.released = True


SessionFactory = Callable[[str, "str | None"], Session]


def make_session_factory(manager: ConversationMemoryManager) -> SessionFactory:
    """Build sessions on the shared agent runtime and memory manager."""

    def create(fingerprint: str, owner: str | None) -> Session:
        return Session(fingerprint=fingerprint, owner=owner, agent=CmwAgent(manager.runtime, manager.entry()),
                       _manager=manager)

    return create
