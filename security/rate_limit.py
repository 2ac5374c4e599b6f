"""Sliding-window message limits per owner and per client address.

Holds only recent timestamps under keyed fingerprints (never a raw id, never user content), bounded in
size and forgotten after one idle window. This is the one map besides the session registry; it stores
no user data, so nothing in it can leak to anyone.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Callable

from cachetools import TTLCache

WINDOW_SECONDS = 60.0


def rate_limit_message(limit: int, wait: int) -> str:
    return (f"You are sending messages too quickly (limit: {limit} per minute). "
            f"Please wait {wait} seconds and try again.")


class RateLimiter:
    def __init__(self, limit: int, *, maxsize: int = 100_000, window: float = WINDOW_SECONDS,
                 timer: Callable[[], float] = time.monotonic):
        self.limit = limit
        self._window = window
        self._timer = timer
        self._hits: TTLCache = TTLCache(maxsize=maxsize, ttl=window, timer=timer)
        self._lock = threading.Lock()

    def wait_seconds(self, key: str) -> int:
        """0 and the hit is counted, or the whole seconds to wait (the hit is not counted)."""
        if self.limit <= 0:
            return 0
        now = self._timer()
        with self._lock:
            hits = self._hits.get(key) or deque()
            while hits and hits[0] <= now - self._window:
                hits.popleft()
            if len(hits) >= self.limit:
                self._hits[key] = hits
                return max(1, math.ceil(hits[0] + self._window - now))
            hits.append(now)
            self._hits[key] = hits
            return 0
