"""Benchmark 4: the per-request session path and resuming a long conversation from the store (in-process).

* get-or-create + memory load: what every chat request does before the model runs (resolve the
  session - ``SessionEdge.resolve``: registry get-or-create, owner check, store rehydration - then
  ``session.memory.load()``), on the app built by ``app_ng.build_app`` with whatever store it
  configures; ops/s and p50/p99 per request, for existing sessions (the common case) and new ones.
* resume a 100-turn conversation: after 100 turns (names, cart tool calls, counting), the time to load
  the conversation back (``aget_state`` on its thread) - p50/p99 over repeated loads, plus the first
  load on a freshly opened store (as after a restart). Measured on:
    - the store ``app_ng.build_app`` configures, through the app's own /chat handler; also "after
      eviction": the live session is dropped and the next request rehydrates it from the store;
    - ``AsyncSqliteSaver`` (langgraph.checkpoint.sqlite.aio) with the project's agent graph;
    - ``AsyncPostgresSaver`` - only when ``DATABASE_URL`` is set.

    .venv/bin/python bench/session_path.py [--requests 20000] [--turns 100] [--loads 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT  # noqa: E402,F401  (puts the project on sys.path)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

SCRIPT = ["My name is Resume Tester", "Add 2 apples to my cart", "Count to 20", "What's in my cart?",
          "What's my name?", "Add a dozen eggs to my cart", "Remove apples from my cart", "Count to 5"]


@dataclass
class _View:  # what tools may see of a session (agent.context.SessionView)
    fingerprint: str = "bench"
    created_at: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.time)


def _stats(samples: list[float]) -> dict:
    ms = np.array(samples) * 1000.0
    return {"n": len(samples), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "max_ms": float(ms.max())}


async def _turn(graph, config, text: str, context) -> None:
    """One turn the way the app runs it (astream, messages + updates), drained."""
    from langchain_core.messages import HumanMessage

    async for _ in graph.astream({"messages": [HumanMessage(content=text)]}, config, context=context,
                                 stream_mode=["messages", "updates"]):
        pass


async def _resume_stats(load, loads: int) -> dict:
    samples = []
    for _ in range(loads):
        t0 = time.perf_counter()
        snapshot = await load()
        samples.append(time.perf_counter() - t0)
    result = _stats(samples)
    values = snapshot.values if hasattr(snapshot, "values") else {}
    result["messages"] = len((values or {}).get("messages", []))
    return result


async def _write_conversation(graph, thread_id: str, turns: int) -> dict:
    from agent.context import TurnContext

    config = {"configurable": {"thread_id": thread_id}}
    context = TurnContext(_View())
    samples = []
    for i in range(turns):
        t0 = time.perf_counter()
        await _turn(graph, config, SCRIPT[i % len(SCRIPT)], context)
        samples.append(time.perf_counter() - t0)
    return _stats(samples)


# ------------------------------------------------------------------------------------------------


async def bench_app_store(requests: int, sessions: int, turns: int, loads: int, data_dir: Path) -> dict:
    """The app as built by app_ng.build_app: request path ops/s, and 100-turn resume on its store."""
    from inproc import Driver, build, settings_env

    app = build(settings_env(data_dir, CMW_SESSION_MAX=sessions * 4 + 10, use_database_url=True))
    driver = Driver(app)  # inside the running loop: async savers bind to it
    try:
        owners = [driver.new_owner() for _ in range(max(1, sessions // 10))]
        keys = [(f"sess{i:06d}", owners[i % len(owners)]) for i in range(sessions)]
        for key, token in keys:  # each session exists and has had one short turn
            await driver.turn(key, token, "Count to 3")
        graph = await driver.graph(await driver.session(*keys[0]))
        store = type(graph.checkpointer).__name__

        rng = random.Random(6)
        picks = [rng.choice(keys) for _ in range(requests)]

        async def timed(calls) -> dict:
            lat = []
            t_start = time.perf_counter()
            for key, token in calls:
                t0 = time.perf_counter()
                session = await driver.session(key, token)
                await session.memory.load()
                lat.append(time.perf_counter() - t0)
            return {"ops_per_s": len(lat) / (time.perf_counter() - t_start), **_stats(lat)}

        existing = await timed(picks)
        created = await timed([(f"new{i:06d}", owners[i % len(owners)]) for i in range(min(requests, 5000))])
        lat = []
        t_start = time.perf_counter()
        for key, token in picks:
            t0 = time.perf_counter()
            await driver.session(key, token)
            lat.append(time.perf_counter() - t0)
        lookup_only = {"ops_per_s": requests / (time.perf_counter() - t_start), **_stats(lat)}

        # a 100-turn conversation through the /chat handler, then loaded back
        key, token = "long-conversation", owners[0]
        t_write = []
        for i in range(turns):
            t0 = time.perf_counter()
            await driver.turn(key, token, SCRIPT[i % len(SCRIPT)])
            t_write.append(time.perf_counter() - t0)
        session = await driver.session(key, token)
        conversation = session.memory.conversation_id
        resume = await _resume_stats(lambda: graph.aget_state(session.memory.config), loads)
        # resume as after the session was evicted: a new live session for the same hash, rehydrated from
        # the store, then its memory loaded (what the next request does)
        lat, turns_seen, same = [], 0, True
        for _ in range(loads):
            app.registry.discard(key)
            t0 = time.perf_counter()
            session = await driver.session(key, token)
            transcript = await session.memory.load()
            lat.append(time.perf_counter() - t0)
            turns_seen = transcript.turn_count
            same = same and session.memory.conversation_id == conversation
        evicted = {**_stats(lat), "turns_loaded": turns_seen, "same_conversation": same}
        return {"store": store, "path": driver.path, "sessions": sessions, "requests": requests,
                "get_or_create_and_load_existing": existing, "get_or_create_and_load_new": created,
                "get_or_create_only": lookup_only, "turn_write": _stats(t_write), "resume": resume,
                "resume_after_eviction": evicted}
    finally:
        await driver.close()


async def bench_sqlite(turns: int, loads: int, data_dir: Path) -> dict:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from agent.catalog import load_catalog
    from agent.cmw_agent import build_agent_graph
    from agent.offline_model import OfflineChatModel

    path = data_dir / "resume.sqlite"
    thread = uuid.uuid4().hex
    config = {"configurable": {"thread_id": thread}}
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        graph = build_agent_graph(OfflineChatModel(token_delay=0), load_catalog(), saver)
        write = await _write_conversation(graph, thread, turns)
    # a freshly opened store, as after a restart: the first load, then repeated loads
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        graph = build_agent_graph(OfflineChatModel(token_delay=0), load_catalog(), saver)
        t0 = time.perf_counter()
        await graph.aget_state(config)
        first = (time.perf_counter() - t0) * 1000
        resume = await _resume_stats(lambda: graph.aget_state(config), loads)
    return {"store": "AsyncSqliteSaver", "file_bytes": path.stat().st_size, "turn_write": write,
            "first_load_after_reopen_ms": first, "resume": resume}


async def bench_postgres(url: str, turns: int, loads: int) -> dict:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    from agent.catalog import load_catalog
    from agent.cmw_agent import build_agent_graph
    from agent.offline_model import OfflineChatModel

    kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    thread = f"bench-{uuid.uuid4().hex}"
    config = {"configurable": {"thread_id": thread}}

    async def open_saver():
        pool = AsyncConnectionPool(url, kwargs=kwargs, open=False, min_size=1, max_size=4)
        await pool.open()
        return pool, AsyncPostgresSaver(pool)

    pool, saver = await open_saver()
    try:
        await saver.setup()
        graph = build_agent_graph(OfflineChatModel(token_delay=0), load_catalog(), saver)
        write = await _write_conversation(graph, thread, turns)
    finally:
        await pool.close()
    pool, saver = await open_saver()
    try:
        graph = build_agent_graph(OfflineChatModel(token_delay=0), load_catalog(), saver)
        t0 = time.perf_counter()
        await graph.aget_state(config)
        first = (time.perf_counter() - t0) * 1000
        resume = await _resume_stats(lambda: graph.aget_state(config), loads)
        await saver.adelete_thread(thread)  # leave the database as it was
    finally:
        await pool.close()
    return {"store": "AsyncPostgresSaver", "turn_write": write, "first_load_after_reopen_ms": first,
            "resume": resume}


async def _run(requests: int, sessions: int, turns: int, loads: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="cmw-bench-session-"))
    try:
        out = {"turns": turns, "app": await bench_app_store(requests, sessions, turns, loads, tmp / "app"),
               "sqlite": await bench_sqlite(turns, loads, tmp)}
        url = os.environ.get("DATABASE_URL", "").strip()
        out["postgres"] = await bench_postgres(url, turns, loads) if url else None
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(requests: int = 20000, sessions: int = 1000, turns: int = 100, loads: int = 300, log=print) -> dict:
    log("[session path] in-process: get-or-create + load, and 100-turn resume")
    out = asyncio.run(_run(requests, sessions, turns, loads))
    app = out["app"]
    log(f"  app store {app['store']}: get_or_create+load {app['get_or_create_and_load_existing']['ops_per_s']:,.0f} ops/s"
        f" (p99 {app['get_or_create_and_load_existing']['p99_ms']:.3f} ms); new session "
        f"{app['get_or_create_and_load_new']['ops_per_s']:,.0f} ops/s; resume {turns} turns p50/p99 "
        f"{app['resume']['p50_ms']:.2f}/{app['resume']['p99_ms']:.2f} ms; after eviction (rehydrate + load) "
        f"{app['resume_after_eviction']['p50_ms']:.2f}/{app['resume_after_eviction']['p99_ms']:.2f} ms, "
        f"{app['resume_after_eviction']['turns_loaded']} turns back")
    for key in ("sqlite", "postgres"):
        r = out.get(key)
        if r:
            log(f"  {r['store']}: resume {turns} turns p50/p99 {r['resume']['p50_ms']:.2f}/{r['resume']['p99_ms']:.2f} ms,"
                f" first load after reopen {r['first_load_after_reopen_ms']:.1f} ms, turn write p50 "
                f"{r['turn_write']['p50_ms']:.1f} ms")
    if out.get("postgres") is None:
        log("  PostgreSQL: skipped (DATABASE_URL not set)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--loads", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out = run(args.requests, args.sessions, args.turns, args.loads)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    sys.stdout.flush()
    os._exit(0)  # do not wait on store threads a library may leave behind


if __name__ == "__main__":
    main()
