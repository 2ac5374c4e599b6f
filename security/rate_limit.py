"""Sliding-window message limits per owner and per client address.

Counted in this process (per worker), or - with ``CMW_REDIS_URL`` - in Redis, so that every worker counts
the same hits. Either way only recent timestamps are held, under keyed fingerprints (never a raw id, never
user content): in memory bounded in size and forgotten after one idle window; in Redis under hashed keys
(``cmw:rate:<limit>:<hash>``) that expire after one window. The in-memory map is the one map besides the
session registry; it stores no user data, so nothing in it can leak to anyone.

Redis unreachable: the limiter fails open to its own per-process counts (one warning in the log), tries
Redis again after ``RETRY_REDIS_SECONDS``, and never blocks or fails a message because of Redis.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import uuid
from collections import deque
from typing import Callable

from cachetools import TTLCache

log = logging.getLogger("cmw.rate_limit")

WINDOW_SECONDS = 60.0
REDIS_TIMEOUT = 0.5  # seconds to connect or answer; past it the hit is counted in this process
RETRY_REDIS_SECONDS = 30.0  # after a failure, this long on per-process counts before trying Redis again
KEY_PREFIX = "cmw:rate:"
# One hit, atomically, on Redis's clock: drop hits older than the window, refuse (seconds to wait) when
# ``limit`` remain, else record this one and let the key expire one window after its newest hit.
_HIT = """
local window, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
  return math.max(1, math.ceil(oldest + window - now))
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return 0
"""


def rate_limit_message(limit: int, wait: int) -> str:
    return (f"You are sending messages too quickly (limit: {limit} per minute). "
            f"Please wait {wait} seconds and try again.")


class RedisWindow:
    """The same sliding window, kept in Redis and shared by every worker that names the same limit."""

    def __init__(self, url: str, name: str, window: float):
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT,
                                            retry=Retry(NoBackoff(), 0))
        self._script = self._client.register_script(_HIT)
        self._prefix = f"{KEY_PREFIX}{name}:"
        self._window = window

    async def wait_seconds(self, key: str, limit: int) -> int:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return int(await self._script(keys=[self._prefix + digest], args=[self._window, limit, uuid.uuid4().hex]))

    async def close(self) -> None:
        await self._client.aclose()


class RateLimiter:
    def __init__(self, limit: int, *, maxsize: int = 100_000, window: float = WINDOW_SECONDS,
                 timer: Callable[[], float] = time.monotonic, redis_url: str | None = None, name: str = "limit"):
        """``name`` tells this limit's keys apart from other limits' in Redis (unused without ``redis_url``)."""
        self.limit = limit
        self._window = window
        self._timer = timer
        self._hits: TTLCache = TTLCache(maxsize=maxsize, ttl=window, timer=timer)
        self._lock = threading.Lock()
        self.name = name
        self._shared = RedisWindow(redis_url, name, window) if redis_url and limit > 0 else None
        self._redis_down_until: float | None = None  # set while counting here because Redis failed

    async def wait_seconds(self, key: str) -> int:
        """0 and the hit is counted, or the whole seconds to wait (the hit is not counted)."""
        if self.limit <= 0:
            return 0
        down_until = self._redis_down_until
        if self._shared is not None and (down_until is None or time.monotonic() >= down_until):
            try:
                wait = await self._shared.wait_seconds(key, self.limit)
            except Exception as error:  # fail open to this worker's own counts; never block the chat
                if self._redis_down_until is None:
                    log.warning("Redis is unreachable for the %s rate limit (%s: %s); counting per worker until "
                                "it is back", self.name, type(error).__name__, error)
                self._redis_down_until = time.monotonic() + RETRY_REDIS_SECONDS
            else:
                if self._redis_down_until is not None:
                    log.info("Redis is reachable again; the %s rate limit is counted across workers", self.name)
                    self._redis_down_until = None
                return wait
        return self._local_wait(key)

    def _local_wait(self, key: str) -> int:
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

    async def close(self) -> None:
        if self._shared is not None:
            await self._shared.close()
