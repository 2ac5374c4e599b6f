"""Session: everything the app holds about one user, in one object.

A session is created by the registry (the only per-user map in the process) and handed to the handler,
which passes it down explicitly. It holds the user's agent (which owns the current conversation), the
cancel handles of the user's requested turns, and the facts tools may see. Releasing a session frees
live objects only: its conversations are in the store and come back on the next request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from agent.cmw_agent import CmwAgent
from agent.context import ConversationFiles, TurnContext
from memory.conversation_memory import ConversationMemory, ConversationMemoryManager
from memory.turn import TurnHandle
from security.caller import may_use


@dataclass(eq=False)
class Session:
    fingerprint: str  # keyed hash of the session key: safe for logs, the UI and the store
    owner: str | None  # keyed hash of the owner cookie this session was bound to at first use
    agent: CmwAgent
    created_at: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.time)
    released: bool = False
    username: str | None = None  # login name seen at first use when auth is on
    principal: str | None = None  # who owns stored data: owner (+ username); set by the edge
    turns: set[TurnHandle] = field(default_factory=set, repr=False)  # requested, not yet finished

    @property
    def conversation(self) -> ConversationMemory:
        return self.agent.conversation

    def may_be_used_by(self, owner: str | None, username: str | None) -> bool:
        return may_use(self.owner, self.username, owner, username)

    def touch(self) -> None:
        self.last_active = time.time()

    def turn_context(self, conversation: ConversationMemory) -> TurnContext:
        """The frozen view a tool gets of this session for one turn."""
        files = ConversationFiles(self.agent.files, self.principal, conversation.conversation_id) \
            if self.principal else None
        return TurnContext(conversation.conversation_id, self.fingerprint, self.created_at, self.last_active, files)

    def begin_turn(self) -> TurnHandle:
        handle = TurnHandle()
        self.turns.add(handle)
        return handle

    def end_turn(self, handle: TurnHandle) -> None:
        self.turns.discard(handle)

    def stop_turns(self) -> int:
        """Stop: cancel every turn this session requested, running or still waiting."""
        for handle in self.turns:
            handle.cancel()
        return len(self.turns)

    def release(self) -> None:
        """Free this session's live objects (expiry, eviction, unload). Stored data is untouched, and a
        running turn finishes: it holds its own references."""
        self.released = True


SessionFactory = Callable[[str, "str | None"], Session]


def make_session_factory(manager: ConversationMemoryManager) -> SessionFactory:
    """Build sessions on the shared memory manager (and through it, the shared agent graph)."""

    def create(fingerprint: str, owner: str | None) -> Session:
        return Session(fingerprint=fingerprint, owner=owner, agent=CmwAgent(manager))

    return create
