"""Rate limits (security/rate_limit.py): per worker in memory, or shared by every worker through Redis
(CMW_REDIS_URL); Redis down fails open to per-worker counts. The Redis tests use the server at
TEST_REDIS_URL (default redis://127.0.0.1:6379/0) and skip, saying so, when none answers there."""

from __future__ import annotations

import logging
import os
import time
import uuid

import pytest

from app_ng import build_app
from security.rate_limit import KEY_PREFIX, RateLimiter, rate_limit_message
from tests_support import handler_request
from ui.chat_handler import ChatHandlers
from ui.edge import SessionEdge

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NOWHERE = "redis://127.0.0.1:1/0"  # nothing listens on port 1: refused at once


@pytest.fixture
async def redis_url():
    """REDIS_URL when a Redis answers there (its test keys deleted afterwards); else the test is skipped."""
    import redis.asyncio as redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        try:
            await client.ping()
        except Exception as error:
            pytest.skip(f"no Redis at {REDIS_URL} ({type(error).__name__}); the shared rate-limit tests need one "
                        "(set TEST_REDIS_URL)")
        yield REDIS_URL
        keys = [key async for key in client.scan_iter(f"{KEY_PREFIX}test-*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def limit_name() -> str:
    return f"test-{uuid.uuid4().hex}"


async def test_in_memory_limits_slide_per_key():
    now = [0.0]
    limiter = RateLimiter(2, window=10, timer=lambda: now[0])
    assert [await limiter.wait_seconds("a") for _ in range(3)] == [0, 0, 10]
    assert await limiter.wait_seconds("b") == 0
    now[0] = 10.5
    assert await limiter.wait_seconds("a") == 0
    assert await RateLimiter(0).wait_seconds("a") == 0  # 0 = off


async def test_two_workers_limiters_share_one_count_in_redis(redis_url):
    name = limit_name()
    first, second = (RateLimiter(3, redis_url=redis_url, name=name) for _ in range(2))
    try:
        assert [await first.wait_seconds("k"), await second.wait_seconds("k"), await first.wait_seconds("k")] == [0, 0, 0]
        assert 1 <= await second.wait_seconds("k") <= 60 and await first.wait_seconds("k") >= 1
        assert await first.wait_seconds("other key") == 0
        another = RateLimiter(3, redis_url=redis_url, name=limit_name())
        assert await another.wait_seconds("k") == 0  # another limit counts apart
        await another.close()
        assert first._hits.currsize == 0  # nothing was counted in this process

        import redis.asyncio as redis
        client = redis.Redis.from_url(redis_url)
        keys = [k.decode() async for k in client.scan_iter(f"{KEY_PREFIX}{name}:*")]
        assert len(keys) == 2 and not any("key" in k or k.endswith(":k") for k in keys)  # one per key, hashed
        assert all(0 < ttl <= 60 for ttl in [await client.ttl(k) for k in keys])  # each expires
        await client.aclose()
    finally:
        await first.close()
        await second.close()


async def test_the_redis_window_slides(redis_url):
    limiter = RateLimiter(2, window=1.0, redis_url=redis_url, name=limit_name())
    try:
        assert [await limiter.wait_seconds("k") for _ in range(3)] == [0, 0, 1]
        time.sleep(1.1)
        assert await limiter.wait_seconds("k") == 0
    finally:
        await limiter.close()


async def test_redis_down_fails_open_to_per_worker_counts_with_one_warning(caplog):
    limiter = RateLimiter(2, redis_url=NOWHERE, name=limit_name())
    caplog.set_level(logging.WARNING, logger="cmw.rate_limit")
    started = time.monotonic()
    results = [await limiter.wait_seconds("k") for _ in range(5)]
    assert results[:2] == [0, 0] and all(wait >= 1 for wait in results[2:])  # still limited, in this worker
    assert time.monotonic() - started < 2  # never stuck on Redis
    warnings = [r for r in caplog.records if r.name == "cmw.rate_limit" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "per worker" in warnings[0].getMessage()
    await limiter.close()


async def test_a_person_on_two_workers_meets_one_limit(redis_url, make_settings):
    apps = [build_app(make_settings(stream_interval=0.0, workers=2, redis_url=redis_url, rate_limit_per_owner=3))
            for _ in range(2)]
    try:
        token = apps[0].credentials.mint()
        owner = apps[0].credentials.owner_of(token)
        chats = [ChatHandlers(SessionEdge(app.registry, app.credentials), app.manager, app.settings) for app in apps]
        # every run of this test has an owner of its own, so it starts from zero in the shared Redis
        replies = []
        for worker in (0, 1, 0, 1):
            request = handler_request(f"tab-{worker}", owner)
            replies.append([r async for r in chats[worker].api_chat("Count to 3", request)][-1])
        assert replies[:3] == ["1 2 3"] * 3
        assert replies[3].startswith(rate_limit_message(3, 0).split("Please")[0])
    finally:
        for app in apps:
            await app.manager.store.close()
