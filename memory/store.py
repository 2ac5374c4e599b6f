"""ConversationStore: durable conversations - a LangGraph checkpointer plus a table of conversations.

The checkpointer keeps each conversation's agent state (messages and cart) under its thread id, a
server-made uuid. LangGraph has no "list threads" API, so a small ``cmw_conversations`` table beside the
checkpoints records who owns each conversation, its title and when it was last touched.

Backends: embedded SQLite under ``CMW_DATA_DIR`` (default), or PostgreSQL when ``DATABASE_URL`` is set.
Async savers bind the running event loop, so :meth:`open` is called lazily from inside the app's loop.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SQLITE_FILE = "cmw.sqlite"
SQLITE_BUSY_MS = 30_000  # two connections (checkpoints, conversation rows) share the file: wait, don't fail
TITLE_CHARS = 60

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cmw_conversations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    last_session TEXT
)"""
_INDEX = "CREATE INDEX IF NOT EXISTS cmw_conversations_owner ON cmw_conversations (owner, updated_at)"
_COLUMNS = "id, owner, title, created_at, updated_at, last_session"
# Assistant (MCP) tokens: only a keyed hash of each token is kept; a token opens one conversation of its owner.
_TOKENS = """
CREATE TABLE IF NOT EXISTS cmw_assistant_tokens (
    token_hash TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
)"""
_TOKEN_COLUMNS = "id, owner, conversation_id, created_at, expires_at"


@dataclass(frozen=True)
class TokenRecord:
    id: str  # a random label for listing and revoking; not the token
    owner: str
    conversation_id: str
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class ConversationRecord:
    id: str
    owner: str
    title: str
    created_at: float
    updated_at: float
    last_session: str | None


def title_from(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


class Transaction:
    """The statements of one :meth:`ConversationStore.transaction` block (``?`` placeholders on both backends)."""

    def __init__(self, conn: Any, *, postgres: bool):
        self._conn, self.postgres = conn, postgres

    def _sql(self, query: str) -> str:
        return query.replace("?", "%s") if self.postgres else query

    async def rows(self, query: str, *args) -> list[tuple]:
        cursor = await self._conn.execute(self._sql(query), args)
        rows = await cursor.fetchall() if cursor.description else []
        return [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in rows]

    async def change(self, query: str, *args) -> int:
        cursor = await self._conn.execute(self._sql(query), args)
        return cursor.rowcount

    async def insert_rows(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        """Insert many rows (PostgreSQL: one COPY, much faster than an INSERT per row); ``table`` and
        ``columns`` are names from the code, never input."""
        if not rows:
            return
        if self.postgres:
            async with self._conn.cursor() as cursor:
                async with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        await copy.write_row(row)
        else:
            await self._conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) "
                                         f"VALUES ({', '.join('?' * len(columns))})", rows)


class ConversationStore:
    """Shared by all sessions; every query names the owner, so no call can reach another owner's rows."""

    def __init__(self, *, data_dir: Path | None = None, database_url: str | None = None):
        if not database_url and data_dir is None:
            raise ValueError("a data directory or a database URL is required")
        self.database_url = database_url
        self.data_dir = data_dir
        self._saver: Any = None
        self._sqlite_turn = asyncio.Lock()  # SQLite: statements of the shared connection, one at a time
        self._sql: Any = None  # aiosqlite connection or psycopg pool
        self._opening: asyncio.Lock | None = None

    @property
    def path(self) -> Path | None:
        return None if self.database_url else self.data_dir / SQLITE_FILE

    # -- lifecycle -----------------------------------------------------------------------------
    async def open(self) -> None:
        if self._saver is not None:
            return
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._saver is None:
                await (self._open_postgres() if self.database_url else self._open_sqlite())

    async def _open_sqlite(self) -> None:
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        self.data_dir.mkdir(parents=True, exist_ok=True)
        saver_conn = await aiosqlite.connect(self.path)
        await saver_conn.execute("PRAGMA journal_mode=WAL")
        await saver_conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        saver = AsyncSqliteSaver(saver_conn)
        await saver.setup()
        sql = await aiosqlite.connect(self.path)
        await sql.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        await sql.execute(_SCHEMA)
        await sql.execute(_INDEX)
        await sql.execute(_TOKENS)
        await sql.commit()
        self._sql, self._saver = sql, saver

    async def _open_postgres(self) -> None:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        pool = AsyncConnectionPool(self.database_url, open=False, max_size=20,
                                   kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
        await pool.open()
        saver = AsyncPostgresSaver(pool)
        await saver.setup()
        async with pool.connection() as conn:
            await conn.execute(_SCHEMA)
            await conn.execute(_INDEX)
            await conn.execute(_TOKENS)
        self._sql, self._saver = pool, saver

    async def checkpointer(self):
        await self.open()
        return self._saver

    async def close(self) -> None:
        if self._sql is None:
            return
        if self.database_url:
            await self._sql.close()
        else:
            await self._sql.close()
            await self._saver.conn.close()
        self._sql = self._saver = None

    # -- SQL helpers ---------------------------------------------------------------------------
    async def _rows(self, query: str, *args) -> list[tuple]:
        await self.open()
        if self.database_url:
            async with self._sql.connection() as conn:
                cursor = await conn.execute(query.replace("?", "%s"), args)
                rows = await cursor.fetchall() if cursor.description else []
                return [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in rows]
        async with self._sqlite_turn:
            cursor = await self._sql.execute(query, args)
            rows = await cursor.fetchall()
            await self._sql.commit()
        return [tuple(r) for r in rows]

    async def _change(self, query: str, *args) -> int:
        await self.open()
        if self.database_url:
            async with self._sql.connection() as conn:
                cursor = await conn.execute(query.replace("?", "%s"), args)
                return cursor.rowcount
        async with self._sqlite_turn:  # one statement at a time on this connection, write lock taken up front
            try:
                await self._sql.execute("BEGIN IMMEDIATE")  # waits (busy_timeout) instead of failing mid-upgrade
                cursor = await self._sql.execute(query, args)
                await self._sql.commit()
            except BaseException:
                await self._sql.rollback()
                raise
        return cursor.rowcount

    @asynccontextmanager
    async def transaction(self):
        """Several statements in one transaction: ``async with store.transaction() as tx:`` then
        ``await tx.rows(...)``, ``await tx.change(...)``, ``await tx.insert_rows(...)``. Commits when the block ends,
        rolls back (nothing written) when it raises. SQLite: holds the shared connection and the write lock
        for the whole block, so the block must not call the store's other methods."""
        await self.open()
        if self.database_url:
            async with self._sql.connection() as conn, conn.transaction():
                yield Transaction(conn, postgres=True)
            return
        async with self._sqlite_turn:
            try:
                await self._sql.execute("BEGIN IMMEDIATE")
                yield Transaction(self._sql, postgres=False)
                await self._sql.commit()
            except BaseException:
                await self._sql.rollback()
                raise

    # -- conversations -------------------------------------------------------------------------
    async def record_turn(self, conversation_id: str, owner: str, session: str, message: str,
                          now: float | None = None) -> bool:
        """Note a turn: create the conversation (titled by its first message) or touch it. False when the
        id belongs to another owner: nothing is changed, and the caller must not run the turn."""
        now = time.time() if now is None else now
        return await self._change(
            f"INSERT INTO cmw_conversations ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at, last_session = excluded.last_session "
            "WHERE cmw_conversations.owner = excluded.owner",
            conversation_id, owner, title_from(message) or "New chat", now, now, session) == 1

    async def touch(self, conversation_id: str, owner: str, now: float | None = None) -> bool:
        """Note activity that is not a chat turn (an assistant changed the cart): only ``updated_at``."""
        return await self._change("UPDATE cmw_conversations SET updated_at = ? WHERE id = ? AND owner = ?",
                                  time.time() if now is None else now, conversation_id, owner) == 1

    async def get(self, conversation_id: str, owner: str) -> ConversationRecord | None:
        rows = await self._rows(f"SELECT {_COLUMNS} FROM cmw_conversations WHERE id = ? AND owner = ?",
                                conversation_id, owner)
        return ConversationRecord(*rows[0]) if rows else None

    async def list_for_owner(self, owner: str) -> list[ConversationRecord]:
        rows = await self._rows(f"SELECT {_COLUMNS} FROM cmw_conversations WHERE owner = ? "
                                "ORDER BY updated_at DESC, id", owner)
        return [ConversationRecord(*r) for r in rows]

    async def latest_for_session(self, owner: str, session: str) -> ConversationRecord | None:
        rows = await self._rows(f"SELECT {_COLUMNS} FROM cmw_conversations WHERE owner = ? AND last_session = ? "
                                "ORDER BY updated_at DESC LIMIT 1", owner, session)
        return ConversationRecord(*rows[0]) if rows else None

    async def rename(self, conversation_id: str, owner: str, title: str) -> bool:
        title = title_from(title)
        if not title:
            return False
        return await self._change("UPDATE cmw_conversations SET title = ? WHERE id = ? AND owner = ?",
                                  title, conversation_id, owner) == 1

    async def delete(self, conversation_id: str, owner: str) -> bool:
        if await self._change("DELETE FROM cmw_conversations WHERE id = ? AND owner = ?", conversation_id, owner):
            await self._change("DELETE FROM cmw_assistant_tokens WHERE conversation_id = ? AND owner = ?",
                               conversation_id, owner)
            await self._saver.adelete_thread(conversation_id)
            return True
        return False

    async def delete_checkpoints(self, conversation_id: str) -> None:
        await self.open()
        await self._saver.adelete_thread(conversation_id)

    async def untouched_since(self, cutoff: float) -> list[ConversationRecord]:
        """Conversations last updated before ``cutoff`` (epoch seconds): what retention deletes."""
        rows = await self._rows(f"SELECT {_COLUMNS} FROM cmw_conversations WHERE updated_at < ?", cutoff)
        return [ConversationRecord(*r) for r in rows]

    # -- assistant tokens ----------------------------------------------------------------------
    async def add_token(self, token_hash: str, record: TokenRecord) -> None:
        await self._change(f"INSERT INTO cmw_assistant_tokens (token_hash, {_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                           token_hash, record.id, record.owner, record.conversation_id, record.created_at,
                           record.expires_at)

    async def token_by_hash(self, token_hash: str, now: float | None = None) -> TokenRecord | None:
        """The live (unexpired) token with this hash, if any."""
        rows = await self._rows(f"SELECT {_TOKEN_COLUMNS} FROM cmw_assistant_tokens "
                                "WHERE token_hash = ? AND expires_at > ?", token_hash,
                                time.time() if now is None else now)
        return TokenRecord(*rows[0]) if rows else None

    async def tokens_for_owner(self, owner: str) -> list[TokenRecord]:
        rows = await self._rows(f"SELECT {_TOKEN_COLUMNS} FROM cmw_assistant_tokens WHERE owner = ? "
                                "ORDER BY created_at DESC, id", owner)
        return [TokenRecord(*r) for r in rows]

    async def revoke_token(self, token_id: str, owner: str) -> bool:
        return await self._change("DELETE FROM cmw_assistant_tokens WHERE id = ? AND owner = ?", token_id, owner) == 1

    async def delete_tokens(self, owner: str) -> int:
        return await self._change("DELETE FROM cmw_assistant_tokens WHERE owner = ?", owner)

    async def expire_tokens(self, now: float | None = None) -> int:
        return await self._change("DELETE FROM cmw_assistant_tokens WHERE expires_at <= ?",
                                  time.time() if now is None else now)
