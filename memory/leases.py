"""Leases: named, expiring locks in the store's database, shared by every worker (app process) on it.

Several workers on one store (SQLite on one machine, PostgreSQL across machines) each have their own
in-process locks; a lease is what keeps two of them from writing one conversation at once, and what lets
one retention sweeper run at a time. Only used with ``CMW_WORKERS`` > 1: one worker takes no lease and
writes nothing here (:meth:`Leases.for_workers` returns None).

- **Take**: one atomic statement, ``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE the lease expired
  OR its holder is me``; taken when it changed a row. It also returns the holder it was taken from: a
  worker that stopped (SIGKILL, crash) without releasing, whose work may be half-done.
- **Hold**: a background task renews every lease this worker holds, in one statement, every
  ``renew_every`` seconds (expiry ``ttl`` seconds ahead, on the database's clock). A killed worker renews
  nothing, so its leases expire after ``ttl`` and another worker goes on within seconds.
- **Wait**: poll with short, growing sleeps; give up with :class:`LeaseBusy` after ``wait_limit``.
- **Release**: ``DELETE ... WHERE holder = me``.
- **A worker known to have stopped**: the supervisor (``--workers``) sees its worker exit and expires that
  process's leases at once (:func:`expire_leases_of_process`), so its people go on within a second instead
  of after ``ttl``; the next holder still finds them taken from a stopped worker and settles its turn.

Why not PostgreSQL advisory locks: a session-level advisory lock lives on one connection, held for the
whole turn, so 200 concurrent turns would need 200 held connections (the pool has 20) - and SQLite has
none. A row with an expiry works the same on both backends and survives a lost connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import sqlite3
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

from memory.store import ConversationStore

log = logging.getLogger("cmw.leases")

LEASE_TTL = 10.0  # seconds a lease lasts without renewal: how long a killed worker's lease blocks others
RENEW_EVERY = 3.0  # seconds between renewals (three chances before the TTL runs out)
FIRST_POLL = 0.02  # seconds before the first retry of a busy lease; doubles up to MAX_POLL
MAX_POLL = 0.25
WAIT_LIMIT = 180.0  # seconds a waiter tries before giving up: longer than any turn should hold a conversation
_SCHEMA = """
CREATE TABLE IF NOT EXISTS cmw_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    taken_from TEXT
)"""
_SCHEMA_LOCK = 7_140_015  # PostgreSQL advisory lock: two workers starting at once create the table once


def _now(postgres: bool) -> str:
    """The database's clock in epoch seconds: workers on machines whose clocks differ agree on expiry."""
    return ("CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)" if postgres
            else "((julianday('now') - 2440587.5) * 86400.0)")


def expire_leases_of_process(pid: int, *, database_url: str | None, sqlite_path) -> int:
    """Expire every lease held by the app process ``pid`` (it has exited: it renews nothing any more);
    how many. For the supervisor, which is not an event loop: one short synchronous connection."""
    sql = "UPDATE cmw_leases SET expires_at = 0 WHERE holder LIKE ?"
    pattern = f"{int(pid)}-%"  # holders are "<pid>-<random>" (Leases.__init__)
    if database_url:
        import psycopg

        with psycopg.connect(database_url, connect_timeout=10, autocommit=True) as conn:
            if conn.execute("SELECT to_regclass('cmw_leases')").fetchone()[0] is None:
                return 0
            return conn.execute(sql.replace("?", "%s"), (pattern,)).rowcount
    conn = sqlite3.connect(sqlite_path, timeout=10)
    try:
        with conn:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'cmw_leases'").fetchone() is None:
                return 0
            return conn.execute(sql, (pattern,)).rowcount
    finally:
        conn.close()


class LeaseBusy(Exception):
    """Another worker held the lease for longer than the waiter's bound."""


@dataclass(frozen=True)
class Lease:
    name: str
    taken_from: str | None  # another holder that let it expire without releasing it (a stopped worker)


def conversation_lease(conversation_id: str) -> str:
    return f"conversation:{conversation_id}"


class Leases:
    """This worker's leases on one store. Holds no user data: names, its holder id, and what it holds."""

    def __init__(self, store: ConversationStore, *, holder: str | None = None, ttl: float = LEASE_TTL,
                 renew_every: float = RENEW_EVERY, wait_limit: float = WAIT_LIMIT):
        self.store = store
        self.holder = holder or f"{os.getpid()}-{secrets.token_hex(6)}"  # random per process (per app)
        self.ttl, self.renew_every, self.wait_limit = ttl, renew_every, wait_limit
        self._held: set[str] = set()
        self._renewer: asyncio.Task | None = None
        self._ready = False

    @classmethod
    def for_workers(cls, store: ConversationStore, workers: int) -> "Leases | None":
        """Leases when several workers share ``store``; None with one (nothing is taken or written)."""
        return cls(store) if workers > 1 else None

    # -- statements ----------------------------------------------------------------------------
    async def open(self) -> None:
        if self._ready:
            return
        async with self.store.transaction() as tx:
            if tx.postgres:
                await tx.change("SELECT pg_advisory_xact_lock(?)", _SCHEMA_LOCK)
            await tx.change(_SCHEMA)
        self._ready = True

    async def take(self, name: str) -> Lease | None:
        """Take ``name`` if it is free, expired or already mine (one statement); None when it is held."""
        await self.open()
        async with self.store.transaction() as tx:
            now = _now(tx.postgres)
            rows = await tx.rows(
                f"INSERT INTO cmw_leases (name, holder, expires_at, taken_from) VALUES (?, ?, {now} + ?, NULL) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at, "
                "taken_from = cmw_leases.holder "
                f"WHERE cmw_leases.expires_at < {now} OR cmw_leases.holder = excluded.holder "
                "RETURNING taken_from", name, self.holder, self.ttl)
        if not rows:
            return None
        taken_from = rows[0][0]
        return Lease(name, taken_from if taken_from not in (None, self.holder) else None)

    async def renew(self, names: list[str]) -> set[str]:
        """Push the expiry of these leases of mine ``ttl`` ahead; returns the names that are still mine."""
        if not names:
            return set()
        async with self.store.transaction() as tx:
            rows = await tx.rows(
                f"UPDATE cmw_leases SET expires_at = {_now(tx.postgres)} + ? "
                f"WHERE holder = ? AND name IN ({', '.join('?' * len(names))}) RETURNING name",
                self.ttl, self.holder, *names)
        return {r[0] for r in rows}

    async def release(self, name: str) -> None:
        async with self.store.transaction() as tx:
            await tx.change("DELETE FROM cmw_leases WHERE name = ? AND holder = ?", name, self.holder)

    async def abandoned(self, name: str) -> bool:
        """Whether ``name`` is held by another holder that let it expire (a read: nothing is taken)."""
        await self.open()
        postgres = bool(self.store.database_url)
        rows = await self.store._rows(f"SELECT 1 FROM cmw_leases WHERE name = ? AND holder <> ? "
                                      f"AND expires_at < {_now(postgres)}", name, self.holder)
        return bool(rows)

    async def held_by_another(self, name: str) -> bool:
        """Whether another holder has ``name`` now or had it until it expired (a read: nothing is taken)."""
        await self.open()
        return bool(await self.store._rows("SELECT 1 FROM cmw_leases WHERE name = ? AND holder <> ?", name,
                                           self.holder))

    # -- holding -------------------------------------------------------------------------------
    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[Lease]:
        """Hold ``name`` for the block, waiting while another worker holds it; :class:`LeaseBusy` after
        ``wait_limit`` seconds."""
        deadline, pause = time.monotonic() + self.wait_limit, FIRST_POLL
        while (lease := await self.take(name)) is None:
            if time.monotonic() >= deadline:
                raise LeaseBusy(f"lease {name!r} still held by another worker after {self.wait_limit:.0f} s")
            await asyncio.sleep(pause * random.uniform(0.5, 1.0))
            pause = min(MAX_POLL, pause * 2)
        async with self._holding(lease):
            yield lease

    @asynccontextmanager
    async def try_hold(self, name: str) -> AsyncIterator[Lease | None]:
        """Hold ``name`` for the block if it is free now; None (and nothing held) if another worker has it."""
        lease = await self.take(name)
        if lease is None:
            yield None
            return
        async with self._holding(lease):
            yield lease

    @asynccontextmanager
    async def _holding(self, lease: Lease) -> AsyncIterator[None]:
        self._held.add(lease.name)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_held(), name="cmw-leases")
        try:
            yield
        finally:
            self._held.discard(lease.name)
            if not self._held and self._renewer is not None:  # nothing left to renew
                self._renewer.cancel()
                self._renewer = None
            try:  # even when the holder is cancelled: the DELETE runs to its end
                await asyncio.shield(self.release(lease.name))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("could not release lease %s; it expires in %.0f s", lease.name, self.ttl, exc_info=True)

    async def _renew_held(self) -> None:
        """Renew everything held, in one statement per round, until nothing is held."""
        while self._held:
            await asyncio.sleep(self.renew_every)
            names = sorted(self._held)
            try:
                kept = await self.renew(names)
            except Exception:
                log.warning("renewing %d lease(s) failed; retrying in %.0f s", len(names), self.renew_every,
                            exc_info=True)
                continue
            lost = (set(names) - kept) & self._held  # (one released meanwhile is not lost)
            if lost:  # expired before renewal (a stalled worker): another worker may have taken it
                log.error("%d lease(s) expired before renewal; another worker may now write what they guarded",
                          len(lost))
