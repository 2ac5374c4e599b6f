"""What a tool may know about the user it serves: a frozen, typed view passed per call as runtime context."""

from __future__ import annotations

from dataclasses import dataclass

from memory.file_store import FileStore, SearchHit, StoredFile


@dataclass(frozen=True)
class ConversationFiles:
    """The files of one conversation of one owner, read-only: the only way a tool reaches uploaded data.

    Bound by the handler to the owner and conversation it resolved; a tool cannot name another owner or
    another conversation, whatever the model asks for.
    """

    store: FileStore
    owner: str
    conversation_id: str

    async def list(self) -> list[StoredFile]:
        return await self.store.list(self.owner, self.conversation_id)

    async def find(self, name: str) -> StoredFile | None:
        return await self.store.find(self.owner, self.conversation_id, name)

    async def content(self, file: StoredFile) -> bytes | None:
        return await self.store.content(self.owner, self.conversation_id, file.id)

    async def search(self, query: str, limit: int = 10) -> list[SearchHit]:
        return await self.store.search(self.owner, self.conversation_id, query, limit)


@dataclass(frozen=True)
class TurnContext:
    """Runtime context of one agent run (``agent.astream(..., context=TurnContext(...))``).

    Built by the handler from the session it resolved; not checkpointed, not model-visible, and never the
    session object itself: tools can neither reach another conversation nor the store. Cart changes go
    through the conversation's checkpointed state (see agent/tools.py); files are read through ``files``.
    """

    conversation_id: str
    fingerprint: str  # keyed one-way hash of the session key; never the raw session_hash
    created_at: float
    last_active: float
    files: ConversationFiles | None = None  # None where no files exist (an assistant over MCP)
