"""Benchmark 3: app memory (RSS) with 0, 1k, 5k and 10k live sessions, and after the idle TTL passes.

The real app is started on loopback with a short idle TTL; a few simulated users (each its own cookie
jar) create sessions, every session by one short turn through Gradio's queue ("Count to 1"). RSS of
the app process is read at 0 (after a warm-up), 1k, 5k and 10k live sessions, then every few seconds
while the idle TTL passes and the app's sweeper expires them.

    .venv/bin/python bench/memory_bench.py [--sessions 10000] [--ttl 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import AppProcess, bench_env  # noqa: E402
from loadgen import User, discover, new_session_hash  # noqa: E402

TOKEN_DELAY = 0.02
SHORT_TURN = "Count to 1"


def _rss(proc) -> int:
    """Median of three RSS reads, 0.2 s apart (RSS jitters a little while the loop idles)."""
    reads = []
    for _ in range(3):
        reads.append(proc.rss())
        time.sleep(0.2)
    return sorted(reads)[1]


async def _create(app: AppProcess, endpoint, users: list[User], start: int, stop: int, errors: dict,
                  created: list[float]) -> None:
    counter = iter(range(start, stop))

    async def worker(user: User) -> None:
        for _ in counter:
            turn = await user.turn(endpoint, new_session_hash(), SHORT_TURN)
            created.append(time.monotonic())
            if not turn.ok or turn.text.strip() != "1":
                key = (turn.error or f"wrong reply {turn.text[:30]!r}").split(":")[0]
                errors[key] = errors.get(key, 0) + 1

    await asyncio.gather(*(worker(u) for u in users))


async def _http(sessions: int, ttl: float, workers: int, log, during_wait=None) -> dict:
    checkpoints = [c for c in (1000, 5000, 10000) if c < sessions] + [sessions]
    # Gradio's per-event analytics summary (a pandas DataFrame over the last 10k events, rebuilt after every
    # event) is switched off here only to create 10k sessions within the TTL: at 5k+ events it is a third
    # of the app's CPU (see profile in results). It does not change what is kept in memory: the queue
    # still records every event in its (10k-bounded) analytics dict.
    env = bench_env(CMW_OFFLINE_TOKEN_DELAY=TOKEN_DELAY, CMW_SESSION_TTL=ttl, CMW_SESSION_MAX=sessions * 2,
                    GRADIO_ANALYTICS_CACHE_FREQUENCY="1000000000")
    sweep = max(0.5, min(60.0, ttl / 4))
    out: dict = {"ttl_s": ttl, "sweep_interval_s": sweep, "short_turn": SHORT_TURN, "points": [], "timeline": []}
    with AppProcess("memory", "app_ng.py", env) as app:
        endpoint = await discover(app.url)
        users = [User(app.url, timeout=120) for _ in range(workers)]
        try:
            await asyncio.gather(*(u.open("/") for u in users))
            errors: dict[str, int] = {}
            # warm-up: a few sessions, a few turns each, so lazy imports and first-use caches are paid
            warm = users[:10]
            for _ in range(3):
                await asyncio.gather(*(u.turn(endpoint, new_session_hash(), SHORT_TURN) for u in warm))
            app.wait_idle()
            time.sleep(1.0)
            t0 = time.monotonic()
            base = _rss(app)
            out["points"].append({"live": 0, "rss": base, "t": 0.0})
            out["warmup_sessions"] = 30
            log(f"  0 live sessions (after warm-up): RSS {base / 2**20:.1f} MiB")
            made = 0
            created: list[float] = []  # when each session's turn ended (its idle clock starts then)
            cpu0 = app.cpu_seconds()
            for target in checkpoints:
                c0, cpu_seg = time.monotonic(), app.cpu_seconds()
                await _create(app, endpoint, users, made, target, errors, created)
                elapsed, cpu_seg = time.monotonic() - c0, app.cpu_seconds() - cpu_seg
                rss = _rss(app)
                now = time.monotonic()
                # sessions whose idle TTL has not passed yet (all of them, unless creating was slower than the TTL)
                live = sum(1 for c in created if now - c < ttl)
                point = {"live": target, "live_estimate": live, "rss": rss, "t": time.monotonic() - t0,
                         "bytes_per_session": (rss - base) / target,
                         "create_rate_per_s": (target - made) / elapsed,
                         "cpu_ms_per_turn": 1000 * cpu_seg / (target - made)}
                made = target
                out["points"].append(point)
                log(f"  {target:>6} live sessions: RSS {rss / 2**20:.1f} MiB, {point['bytes_per_session'] / 1024:.1f} KiB"
                    f"/session, created at {point['create_rate_per_s']:.0f}/s, app CPU "
                    f"{point['cpu_ms_per_turn']:.1f} ms/turn")
            t_last = time.monotonic()
            out["app_cpu_s_creating"] = app.cpu_seconds() - cpu0
            out["errors"] = errors
            if errors:
                log(f"  errors {errors}; app log:\n{app.log_tail()}")
            if out["points"][-1]["live_estimate"] < sessions:
                log(f"  warning: creating took {t_last - t0:.0f} s > TTL {ttl:.0f} s: only ~"
                    f"{out['points'][-1]['live_estimate']:,} sessions were still live at the last reading")
            out["creation_s"] = t_last - t0
            # wait for the idle TTL to pass and the sweeper to run (every ttl/4 s), sampling RSS
            wait_until = t_last + ttl + sweep + 3.0
            finish = during_wait() if during_wait else None  # other (in-process) work while the app idles
            while time.monotonic() < wait_until:
                out["timeline"].append({"t": time.monotonic() - t0, "rss": app.rss()})
                time.sleep(min(5.0, max(0.1, wait_until - time.monotonic())))
            after = _rss(app)
            out["after_expiry"] = {"rss": after, "t": time.monotonic() - t0,
                                   "vs_baseline": (after - base) / base}
            out["timeline"].append({"t": time.monotonic() - t0, "rss": after})
            log(f"  after the TTL ({ttl:.0f} s) + one sweep: RSS {after / 2**20:.1f} MiB "
                f"({100 * (after - base) / base:+.1f}% vs baseline)")
            if finish is not None:
                out["during_wait"] = finish()
        finally:
            await asyncio.gather(*(u.aclose() for u in users), return_exceptions=True)
    return out


def run(sessions: int = 10000, ttl: float = 200.0, workers: int = 32, log=print, during_wait=None) -> dict:
    """``during_wait()`` is called once the sessions exist (other work while the app idles through its
    TTL); it returns a function whose result is kept as ``http.during_wait``."""
    log(f"[memory] HTTP: {sessions:,} sessions by one short turn each, TTL {ttl:.0f} s")
    return {"sessions": sessions, "http": asyncio.run(_http(sessions, ttl, workers, log, during_wait))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10000)
    parser.add_argument("--ttl", type=float, default=200.0)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out = run(args.sessions, args.ttl, args.workers)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
