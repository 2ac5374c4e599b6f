"""FileStore: people's uploaded files, kept as the owner's data in the conversation store's database.

A file belongs to one owner and one conversation. Its original bytes are a row of ``cmw_files`` (BLOB on
SQLite, BYTEA on PostgreSQL) and its text, passage by passage (see :mod:`agent.file_reader`), is in a
full-text index: an FTS5 table on SQLite, a table with a generated ``tsvector`` column and a GIN index on
PostgreSQL. Every query names the owner, and the conversation where one applies; a file and its index rows
are written, replaced and deleted in one transaction, so a failure leaves nothing half-stored.

The FileStore has no connection or state of its own: it uses the :class:`~memory.store.ConversationStore`'s,
creates its tables on first use, and is closed by closing that store.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from typing import Iterable

from agent.file_reader import FileRefused, Passage, ReadFile, format_size
from memory.store import ConversationStore, Transaction

HIT_CHARS = 300
MAX_QUERY_TERMS = 16
_FILE_COLUMNS = "id, owner, conversation_id, name, kind, media_type, size, summary, created_at"
_FILES = """
CREATE TABLE IF NOT EXISTS cmw_files (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    summary TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    data {blob} NOT NULL
)"""
_FILES_INDEX = "CREATE INDEX IF NOT EXISTS cmw_files_owner ON cmw_files (owner, conversation_id, created_at)"
# SQLite: ``scope`` holds three tokens (owner, conversation, file: hashes and the file id) so that searches
# and deletes narrow through the index (MATCH) before the owner/conversation columns are compared exactly.
_SQLITE_SCHEMA = (
    _FILES.format(blob="BLOB"), _FILES_INDEX,
    "CREATE VIRTUAL TABLE IF NOT EXISTS cmw_file_passages USING fts5(text, scope, owner UNINDEXED, "
    "conversation_id UNINDEXED, file_id UNINDEXED, file_name UNINDEXED, location UNINDEXED, "
    "tokenize = 'unicode61 remove_diacritics 2')",
)
_POSTGRES_SCHEMA = (
    _FILES.format(blob="BYTEA"), _FILES_INDEX,
    """CREATE TABLE IF NOT EXISTS cmw_file_passages (
    id BIGSERIAL PRIMARY KEY,
    file_id TEXT NOT NULL REFERENCES cmw_files (id) ON DELETE CASCADE,
    owner TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    file_name TEXT NOT NULL,
    location TEXT NOT NULL,
    text TEXT NOT NULL,
    tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED
)""",
    "CREATE INDEX IF NOT EXISTS cmw_file_passages_tsv ON cmw_file_passages USING GIN (tsv)",
    "CREATE INDEX IF NOT EXISTS cmw_file_passages_scope ON cmw_file_passages (owner, conversation_id)",
    "CREATE INDEX IF NOT EXISTS cmw_file_passages_file ON cmw_file_passages (file_id)",
)
_SCHEMA_LOCK = 7_140_014  # PostgreSQL advisory lock: two processes starting at once create the tables once


@dataclass(frozen=True)
class StoredFile:
    id: str
    owner: str
    conversation_id: str
    name: str
    kind: str
    media_type: str
    size: int
    summary: str
    created_at: float


@dataclass(frozen=True)
class SearchHit:
    file_name: str
    location: str  # "line 12", "row 5", "page 3"
    text: str  # the matching passage, trimmed to about HIT_CHARS around the first matching word


class FileQuotaExceeded(FileRefused):
    """A limit on stored files was reached; the message gives the numbers and what to do."""


def _require(*ids: str) -> None:
    """Fail closed: a missing owner or conversation id is a programming error, never a shared fallback."""
    if not all(isinstance(i, str) and i for i in ids):
        raise ValueError("an owner (and, where one applies, a conversation id) is required")


def _token(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def _owner_token(owner: str) -> str:
    return _token("o", owner)


def _conversation_token(owner: str, conversation_id: str) -> str:
    return _token("c", owner, conversation_id)


def _file_token(file_id: str) -> str:
    return _token("f", file_id)


def _match(token: str) -> str:
    return f'scope : "{token}"'


def search_terms(query: str) -> list[str]:
    """The words of a query, each safe as a quoted FTS5 phrase: control characters dropped, words with no
    letter or digit dropped, at most MAX_QUERY_TERMS."""
    words = "".join(c if c.isprintable() else " " for c in str(query or "")).split()
    return [w for w in words if any(c.isalnum() for c in w)][:MAX_QUERY_TERMS]


def _quoted(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def trim_hit(text: str, terms: list[str], width: int = HIT_CHARS) -> str:
    """``text`` on one line, cut to about ``width`` characters around the first query word it contains."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    folded = text.casefold()
    found = [i for i in (folded.find(t.casefold()) for t in terms) if i >= 0]
    start = max(0, min(found, default=0) - width // 3)
    start = min(start, len(text) - width)
    piece = text[start:start + width]
    return ("…" if start else "") + piece + ("…" if start + width < len(text) else "")


class FileStore:
    """Files of every owner; every method names the owner, so no call reaches another owner's files."""

    def __init__(self, store: ConversationStore):
        self._store = store
        self._ready = False
        self._creating: asyncio.Lock | None = None

    async def open(self) -> None:
        """Create the tables if they are missing (every method does this on first use)."""
        if self._ready:
            return
        if self._creating is None:
            self._creating = asyncio.Lock()
        async with self._creating:
            if self._ready:
                return
            async with self._store.transaction() as tx:
                if tx.postgres:
                    await tx.change("SELECT pg_advisory_xact_lock(?)", _SCHEMA_LOCK)
                for statement in _POSTGRES_SCHEMA if tx.postgres else _SQLITE_SCHEMA:
                    await tx.change(statement)
            self._ready = True

    async def _rows(self, query: str, *args) -> list[tuple]:
        await self.open()
        return await self._store._rows(query, *args)

    # -- adding ----------------------------------------------------------------------------------
    async def add(self, owner: str, conversation_id: str, read: ReadFile, data: bytes, *,
                  max_owner_bytes: int, max_files_per_conversation: int) -> StoredFile:
        """Store an accepted file and index its passages, in one transaction. A file of the same name (any
        case) in this conversation is replaced. Raises :class:`FileQuotaExceeded` (nothing stored)."""
        _require(owner, conversation_id)
        if read.size != len(data):
            raise ValueError("the ReadFile was not made from these bytes")
        await self.open()
        stored = StoredFile(uuid.uuid4().hex, owner, conversation_id, read.name, read.kind, read.media_type,
                            len(data), read.summary, time.time())
        async with self._store.transaction() as tx:
            if tx.postgres:  # one add at a time per owner, so two uploads cannot both pass the quota
                await tx.change("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", owner)
            replaced = await self._check_limits(tx, stored, max_owner_bytes, max_files_per_conversation)
            for old_id in replaced:
                await self._delete_file(tx, owner, conversation_id, old_id)
            await self._insert_file(tx, stored, data)
            await self._insert_passages(tx, stored, read.passages)
        return stored

    async def _check_limits(self, tx: Transaction, new: StoredFile, max_owner_bytes: int,
                            max_files: int) -> list[str]:
        """The ids of the files ``new`` replaces; raises FileQuotaExceeded when a limit would be passed."""
        replaced = [r[0] for r in await tx.rows(
            "SELECT id FROM cmw_files WHERE owner = ? AND conversation_id = ? AND name_key = ?",
            new.owner, new.conversation_id, new.name.casefold())]
        others = f" AND id NOT IN ({', '.join('?' * len(replaced))})" if replaced else ""
        [(stored,)] = await tx.rows(f"SELECT COALESCE(SUM(size), 0) FROM cmw_files WHERE owner = ?{others}",
                                    new.owner, *replaced)
        [(count,)] = await tx.rows(f"SELECT COUNT(*) FROM cmw_files WHERE owner = ? AND conversation_id = ?{others}",
                                   new.owner, new.conversation_id, *replaced)
        total = int(stored) + new.size
        if total > max_owner_bytes:
            raise FileQuotaExceeded(
                f"{new.name} ({format_size(new.size)}) would bring your stored files to {format_size(total)}; "
                f"the limit is {format_size(max_owner_bytes)}, so delete conversations whose files you no longer "
                "need and try again.")
        if int(count) + 1 > max_files:
            raise FileQuotaExceeded(
                f"This conversation already holds {int(count)} files, the most it can; start a new chat to "
                f"upload {new.name} (or delete this conversation's files first).")
        return replaced

    async def _insert_file(self, tx: Transaction, stored: StoredFile, data: bytes) -> None:
        await tx.change(f"INSERT INTO cmw_files ({_FILE_COLUMNS}, name_key, data) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        stored.id, stored.owner, stored.conversation_id, stored.name, stored.kind,
                        stored.media_type, stored.size, stored.summary, stored.created_at, stored.name.casefold(),
                        data)

    async def _insert_passages(self, tx: Transaction, stored: StoredFile, passages: Iterable[Passage]) -> None:
        base = (stored.owner, stored.conversation_id, stored.id, stored.name)
        columns = ("owner", "conversation_id", "file_id", "file_name", "location", "text")
        if tx.postgres:
            await tx.insert_rows("cmw_file_passages", columns, [(*base, p.location, p.text) for p in passages])
            return
        scope = " ".join((_owner_token(stored.owner), _conversation_token(stored.owner, stored.conversation_id),
                          _file_token(stored.id)))
        await tx.insert_rows("cmw_file_passages", ("scope", *columns),
                             [(scope, *base, p.location, p.text) for p in passages])

    # -- reading ---------------------------------------------------------------------------------
    async def list(self, owner: str, conversation_id: str) -> list[StoredFile]:
        """This conversation's files, oldest first."""
        _require(owner, conversation_id)
        rows = await self._rows(f"SELECT {_FILE_COLUMNS} FROM cmw_files WHERE owner = ? AND conversation_id = ? "
                                "ORDER BY created_at, name_key", owner, conversation_id)
        return [StoredFile(*r) for r in rows]

    async def all_for_owner(self, owner: str) -> list[StoredFile]:
        """Every file of this owner, by conversation then age (for "what this assistant keeps" and export)."""
        _require(owner)
        rows = await self._rows(f"SELECT {_FILE_COLUMNS} FROM cmw_files WHERE owner = ? "
                                "ORDER BY conversation_id, created_at, name_key", owner)
        return [StoredFile(*r) for r in rows]

    async def find(self, owner: str, conversation_id: str, name: str) -> StoredFile | None:
        """The file a person or the model means by ``name``: the exact name (any case), else the one name
        without its suffix, else the one name starting with it. None when absent or ambiguous."""
        key = " ".join(str(name or "").split()).strip("'\"`").casefold()
        if not key:
            return None
        files = await self.list(owner, conversation_id)
        for matches in ([f for f in files if f.name.casefold() == key],
                        [f for f in files if os.path.splitext(f.name)[0].casefold() == key],
                        [f for f in files if f.name.casefold().startswith(key)]):
            if len(matches) == 1:
                return matches[0]
            if matches:
                return None
        return None

    async def content(self, owner: str, conversation_id: str, file_id: str) -> bytes | None:
        _require(owner, conversation_id)
        rows = await self._rows("SELECT data FROM cmw_files WHERE id = ? AND owner = ? AND conversation_id = ?",
                                file_id, owner, conversation_id)
        return bytes(rows[0][0]) if rows else None

    async def search(self, owner: str, conversation_id: str, query: str, limit: int = 10) -> list[SearchHit]:
        """Passages of this conversation's files holding every word of ``query``, best first. Any string is
        a safe query: no search syntax reaches the index, and a query with no words finds nothing."""
        _require(owner, conversation_id)
        terms = search_terms(query)
        limit = max(1, min(int(limit), 100))
        if not terms:
            return []
        if self._store.database_url:
            text = " ".join(terms)
            rows = await self._rows(
                "SELECT file_name, location, text FROM cmw_file_passages "
                "WHERE owner = ? AND conversation_id = ? AND tsv @@ plainto_tsquery('simple', ?) "
                "ORDER BY ts_rank(tsv, plainto_tsquery('simple', ?)) DESC, id LIMIT ?",
                owner, conversation_id, text, text, limit)
        else:
            match = " AND ".join([_match(_conversation_token(owner, conversation_id)),
                                  *(f"text : {_quoted(t)}" for t in terms)])
            rows = await self._rows(
                "SELECT file_name, location, text FROM cmw_file_passages "
                "WHERE cmw_file_passages MATCH ? AND owner = ? AND conversation_id = ? ORDER BY rank, rowid LIMIT ?",
                match, owner, conversation_id, limit)
        return [SearchHit(name, location, trim_hit(text, terms)) for name, location, text in rows]

    async def usage(self, owner: str) -> int:
        """Bytes of files stored for this owner (what the per-owner limit counts)."""
        _require(owner)
        [(total,)] = await self._rows("SELECT COALESCE(SUM(size), 0) FROM cmw_files WHERE owner = ?", owner)
        return int(total)

    async def counts(self, owner: str) -> tuple[int, int]:
        """(file rows, index rows) stored for this owner: what delete-all must bring to (0, 0)."""
        _require(owner)
        [(files,)] = await self._rows("SELECT COUNT(*) FROM cmw_files WHERE owner = ?", owner)
        [(passages,)] = await self._rows("SELECT COUNT(*) FROM cmw_file_passages WHERE owner = ?", owner)
        return int(files), int(passages)

    # -- deleting --------------------------------------------------------------------------------
    async def delete_file(self, owner: str, conversation_id: str, file_id: str) -> bool:
        _require(owner, conversation_id)
        await self.open()
        async with self._store.transaction() as tx:
            return await self._delete_file(tx, owner, conversation_id, file_id) == 1

    async def delete_conversation(self, owner: str, conversation_id: str) -> int:
        """Remove this conversation's files and their index rows; returns the number of files removed."""
        _require(owner, conversation_id)
        await self.open()
        async with self._store.transaction() as tx:
            await self._delete_passages(tx, _conversation_token(owner, conversation_id),
                                        "owner = ? AND conversation_id = ?", owner, conversation_id)
            return await tx.change("DELETE FROM cmw_files WHERE owner = ? AND conversation_id = ?",
                                   owner, conversation_id)

    async def delete_owner(self, owner: str) -> int:
        """Remove every file of this owner and their index rows; returns the number of files removed."""
        _require(owner)
        await self.open()
        async with self._store.transaction() as tx:
            await self._delete_passages(tx, _owner_token(owner), "owner = ?", owner)
            return await tx.change("DELETE FROM cmw_files WHERE owner = ?", owner)

    async def delete_unowned(self, live_conversation_ids: Iterable[str], *, created_before: float | None = None) -> int:
        """Remove files whose conversation is not among ``live_conversation_ids`` (a retention sweep after
        conversations were deleted). ``created_before`` spares files newer than that (epoch seconds): a file
        uploaded into a chat whose first turn is not recorded yet. Returns the number of files removed."""
        live = set(live_conversation_ids)
        cutoff = time.time() if created_before is None else created_before
        pairs = await self._rows("SELECT DISTINCT owner, conversation_id FROM cmw_files WHERE created_at < ?", cutoff)
        removed = 0
        for owner, conversation_id in pairs:
            if conversation_id in live:
                continue
            async with self._store.transaction() as tx:
                await self._delete_passages(tx, _conversation_token(owner, conversation_id),
                                            "owner = ? AND conversation_id = ? AND file_id IN (SELECT id FROM "
                                            "cmw_files WHERE owner = ? AND conversation_id = ? AND created_at < ?)",
                                            owner, conversation_id, owner, conversation_id, cutoff)
                removed += await tx.change("DELETE FROM cmw_files WHERE owner = ? AND conversation_id = ? "
                                           "AND created_at < ?", owner, conversation_id, cutoff)
        return removed

    async def _delete_file(self, tx: Transaction, owner: str, conversation_id: str, file_id: str) -> int:
        await self._delete_passages(tx, _file_token(file_id), "owner = ? AND conversation_id = ? AND file_id = ?",
                                    owner, conversation_id, file_id)
        return await tx.change("DELETE FROM cmw_files WHERE id = ? AND owner = ? AND conversation_id = ?",
                               file_id, owner, conversation_id)

    @staticmethod
    async def _delete_passages(tx: Transaction, token: str, where: str, *args) -> None:
        if tx.postgres:
            await tx.change(f"DELETE FROM cmw_file_passages WHERE {where}", *args)
        else:  # the scope token narrows through the FTS index; the columns then decide exactly
            await tx.change(f"DELETE FROM cmw_file_passages WHERE cmw_file_passages MATCH ? AND {where}",
                            _match(token), *args)
