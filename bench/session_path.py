"""Benchmark 4: resuming a long conversation from the store (in-process, no server).

After ``--turns`` turns (names, cart tool calls, counting) written through the project's agent graph,
the time to load the conversation back (``aget_state`` on its thread): p50/p99 over repeated loads,
plus the first load on a freshly opened store (as after a restart). On ``AsyncSqliteSaver`` always,
and on ``AsyncPostgresSaver`` when ``DATABASE_URL`` is set (its thread is deleted afterwards).

    .venv/bin/python bench/session_path.py [--turns 100] [--loads 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT  # noqa: E402,F401  (puts the project on sys.path)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

SCRIPT = ["My name is Resume Tester", "Add 2 apples to my cart", "Count to 20", "What's in my cart?",
          "What's my name?", "Add a dozen eggs to my cart", "Remove apples from my cart", "Count to 5"]


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
    context = TurnContext(thread_id, "bench", time.time(), time.time())  # what tools may know of the session
    samples = []
    for i in range(turns):
        t0 = time.perf_counter()
        await _turn(graph, config, SCRIPT[i % len(SCRIPT)], context)
        samples.append(time.perf_counter() - t0)
    return _stats(samples)


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


async def _run(turns: int, loads: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="cmw-bench-session-"))
    try:
        out = {"turns": turns, "sqlite": await bench_sqlite(turns, loads, tmp)}
        url = os.environ.get("DATABASE_URL", "").strip()
        out["postgres"] = await bench_postgres(url, turns, loads) if url else None
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(turns: int = 100, loads: int = 300, log=print) -> dict:
    log(f"[resume] {turns}-turn conversation, {loads} loads")
    out = asyncio.run(_run(turns, loads))
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
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--loads", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out = run(args.turns, args.loads)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
