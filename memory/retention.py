"""Retention: conversations untouched for ``CMW_RETENTION_DAYS`` are deleted with their checkpoints,
each under its conversation's lock (through the ConversationMemoryManager, like every other delete).

The sweeper runs as a task in the app's event loop (where the async store lives), started by the first
request. ``sweep_once(now=...)`` takes an injected clock for tests. With several workers on one store, a
sweep runs only in the worker that takes the ``retention`` lease (memory/leases.py); a worker that finds it
taken skips that sweep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from memory.conversation_memory import ConversationMemoryManager

RETENTION_LEASE = "retention"

log = logging.getLogger("cmw.retention")


class RetentionSweeper:
    def __init__(self, manager: ConversationMemoryManager, *, days: float, interval: float,
                 clock: Callable[[], float] = time.time):
        self._manager = manager
        self._max_age = days * 86400
        self._interval = interval
        self._clock = clock
        self._task: asyncio.Task | None = None

    async def sweep_once(self, now: float | None = None) -> int:
        """Delete what is due; returns how many conversations. Several workers: 0 without sweeping when
        another worker is sweeping now."""
        leases = self._manager.leases
        if leases is None:
            return await self._sweep(now)
        async with leases.try_hold(RETENTION_LEASE) as lease:
            if lease is None:
                log.debug("retention: another worker is sweeping; skipped")
                return 0
            return await self._sweep(now)

    async def _sweep(self, now: float | None) -> int:
        now = self._clock() if now is None else now
        await self._manager.store.expire_tokens(now)  # expired assistant tokens open nothing; drop them
        if self._max_age <= 0:
            return 0  # retention 0 means keep forever
        deleted = await self._manager.expire_untouched_since(now - self._max_age)
        if deleted:
            log.info("retention: deleted %d conversation(s) untouched for %.0f days", deleted, self._max_age / 86400)
        return deleted

    async def start(self) -> None:
        """Start sweeping in the running loop (idempotent); also opens the store early."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="cmw-retention")
        await self._manager.store.open()

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception:
                log.exception("retention sweep failed; retrying later")
            await asyncio.sleep(self._interval)
