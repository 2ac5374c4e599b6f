"""Process-wide admission for chat turns: a bounded number run, a bounded number wait, the rest are told
the assistant is busy. Counts only; holds nothing about any user."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

BUSY_MESSAGE = ("The assistant is busy right now: too many conversations are waiting. "
                "Please try again in a minute.")


class Busy(Exception):
    pass


class Admission:
    def __init__(self, running: int, waiting: int):
        self._slots = asyncio.Semaphore(running)
        self._max_waiting = waiting
        self.waiting = 0

    @asynccontextmanager
    async def slot(self):
        if self._slots.locked() and self.waiting >= self._max_waiting:
            raise Busy(BUSY_MESSAGE)
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._slots.release()
