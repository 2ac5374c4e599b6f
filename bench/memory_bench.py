"""Benchmark 3: app memory (RSS) with 0, 1k, 5k and 10k live sessions, and after the idle TTL passes.

HTTP (the faithful measurement): the real app is started on loopback with a short idle TTL; a few
simulated users (each its own cookie jar) create sessions, every session by one short turn through
Gradio's queue ("Count to 1"). RSS of the app process is read at 0 (after a warm-up), 1k, 5k and 10k
live sessions, then every few seconds while the idle TTL passes and the app's sweeper expires them.

In-process (the breakdown): a child process builds the app with ``app_ng.build_app`` (no server) and
measures, with gc between steps,
  * the app's own per-session cost: sessions created by one short turn through the app's own /chat
    handler (found in the Blocks; see inproc.py), then released through the registry's expiry path;
  * Gradio's own per-session cost: one ``SessionState`` per session_hash in a ``StateHolder`` for the
    same Blocks - what Gradio keeps for every hash it has seen, up to ``state_session_capacity``
    (10,000, LRU), regardless of the app's TTL.

    .venv/bin/python bench/memory_bench.py [--sessions 10000] [--ttl 200]
    CMW_BENCH_FIXES=release-gradio-state .venv/bin/python bench/memory_bench.py --http-only \
        --script bench/app_variant.py --json bench/results/memory-variant.json   # a candidate fix
    .venv/bin/python bench/memory_bench.py --inproc-only
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, AppProcess, bench_env  # noqa: E402
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


async def _http(sessions: int, ttl: float, workers: int, log, during_wait=None, script: str = "app_ng.py") -> dict:
    checkpoints = [c for c in (1000, 5000, 10000) if c < sessions] + [sessions]
    # Gradio's per-event analytics summary (a pandas DataFrame over the last 10k events, rebuilt after every
    # event) is switched off here only to create 10k sessions within the TTL: at 5k+ events it is a third
    # of the app's CPU (see profile in results). It does not change what is kept in memory: the queue
    # still records every event in its (10k-bounded) analytics dict.
    env = bench_env(CMW_OFFLINE_TOKEN_DELAY=TOKEN_DELAY, CMW_SESSION_TTL=ttl, CMW_SESSION_MAX=sessions * 2,
                    GRADIO_ANALYTICS_CACHE_FREQUENCY="1000000000")
    sweep = max(0.5, min(60.0, ttl / 4))
    out: dict = {"ttl_s": ttl, "sweep_interval_s": sweep, "short_turn": SHORT_TURN, "points": [], "timeline": []}
    with AppProcess("memory", script, env) as app:
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


# ------------------------------------------------------------------------------------------------
# in-process breakdown (runs in a child process so that its RSS is its own)


def _self_rss() -> int:
    import psutil

    gc.collect()
    return psutil.Process().memory_info().rss


def _malloc_trim() -> bool:
    """Ask glibc to hand freed heap pages back to the OS (Linux/glibc only)."""
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


async def _inproc(sessions: int) -> dict:
    from inproc import Driver, build, settings_env

    import shutil
    import tempfile

    data_dir = tempfile.mkdtemp(prefix="cmw-bench-mem-")
    app = build(settings_env(data_dir, CMW_SESSION_MAX=sessions * 2 + 100, CMW_SESSION_TTL=3600))
    driver = Driver(app)
    registry = app.registry
    owners = [driver.new_owner() for _ in range(max(1, sessions // 10))]  # ~10 tabs per browser

    async def one(i: int, prefix: str = "s") -> None:  # a session created by one short /chat turn
        await driver.turn(f"{prefix}{i:06d}", owners[i % len(owners)], SHORT_TURN)

    for i in range(50):  # warm-up, then released
        await one(i, "warm")
    for i in range(50):
        registry.discard(f"warm{i:06d}")
    out: dict = {"app": [], "gradio": [], "path": f"/chat handler in-process ({driver.path})"}
    base = _self_rss()
    blocks0 = sys.getallocatedblocks()
    out["app"].append({"live": 0, "rss": base, "py_blocks": blocks0})
    made = 0
    for target in [c for c in (1000, 5000, 10000) if c < sessions] + [sessions]:
        for i in range(made, target):
            await one(i)
        made = target
        rss = _self_rss()
        out["app"].append({"live": target, "rss": rss, "bytes_per_session": (rss - base) / target,
                           "py_blocks": sys.getallocatedblocks()})
    # release every session through the registry's expiry path (what the sweeper does after the TTL)
    cache, lock = getattr(registry, "_cache", None), getattr(registry, "_lock", None)
    if cache is not None and lock is not None and hasattr(cache, "expire"):
        with lock:
            cache.expire(time.monotonic() + 10 * float(app.settings.session_ttl))
    else:
        for i in range(made):
            registry.discard(f"s{i:06d}")
    live_after = len(registry)
    rss = _self_rss()
    blocks = sys.getallocatedblocks()
    out["app_after_release"] = {"live": live_after, "rss": rss, "vs_baseline": (rss - base) / base,
                                "py_blocks": blocks, "py_blocks_vs_baseline": (blocks - blocks0) / blocks0}
    trimmed = _malloc_trim()
    rss = _self_rss()
    out["app_after_release_and_malloc_trim"] = {"rss": rss, "vs_baseline": (rss - base) / base, "trimmed": trimmed}

    # Gradio's own per-session state for the same Blocks
    from gradio.state_holder import StateHolder

    holder = StateHolder()
    holder.set_blocks(app.demo)
    gbase = _self_rss()
    out["gradio"].append({"live": 0, "rss": gbase})
    made = 0
    for target in [c for c in (1000, 5000, 10000) if c < sessions] + [sessions]:
        for i in range(made, target):
            holder[f"h{i:06d}"]
        made = target
        rss = _self_rss()
        out["gradio"].append({"live": target, "rss": rss, "bytes_per_session": (rss - gbase) / target})
    holder.session_data.clear()
    holder.time_last_used.clear()
    rss = _self_rss()
    out["gradio_after_clear"] = {"rss": rss, "vs_baseline": (rss - gbase) / gbase}
    out["gradio_state_session_capacity"] = holder.capacity
    await driver.close()
    shutil.rmtree(data_dir, ignore_errors=True)
    return out


def run_inproc(sessions: int) -> dict:
    """Run the in-process breakdown in a fresh child interpreter and return its JSON."""
    env = bench_env()
    proc = subprocess.run([sys.executable, str(Path(__file__)), "--inproc-child", "--sessions", str(sessions)],
                          cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"in-process memory child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(sessions: int = 10000, ttl: float = 200.0, workers: int = 32, inproc: bool = True, http: bool = True,
        log=print, during_wait=None, script: str = "app_ng.py") -> dict:
    out: dict = {"sessions": sessions}
    if inproc:
        log(f"[memory] in-process breakdown ({sessions:,} sessions)")
        res = run_inproc(sessions)
        out["inproc"] = res
        last, glast = res["app"][-1], res["gradio"][-1]
        rel = res["app_after_release"]
        log(f"  app: {last['bytes_per_session'] / 1024:.1f} KiB/session; after release RSS "
            f"{100 * rel['vs_baseline']:+.1f}% vs baseline ({rel['live']} live, Python blocks "
            f"{100 * rel['py_blocks_vs_baseline']:+.1f}%), after malloc_trim(0) "
            f"{100 * res['app_after_release_and_malloc_trim']['vs_baseline']:+.1f}%")
        log(f"  Gradio SessionState: {glast['bytes_per_session'] / 1024:.1f} KiB/session")
    if http:
        log(f"[memory] HTTP: {sessions:,} sessions by one short turn each, TTL {ttl:.0f} s")
        out["http"] = asyncio.run(_http(sessions, ttl, workers, log, during_wait, script))
        out["http"]["script"] = script
        if script.endswith("app_variant.py"):
            out["http"]["fixes"] = os.environ.get("CMW_BENCH_FIXES", "release-gradio-state")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10000)
    parser.add_argument("--ttl", type=float, default=200.0)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--script", default="app_ng.py", help="app to start (e.g. bench/app_variant.py)")
    parser.add_argument("--inproc-only", action="store_true")
    parser.add_argument("--http-only", action="store_true")
    parser.add_argument("--inproc-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.inproc_child:
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        print(json.dumps(asyncio.run(_inproc(args.sessions))), flush=True)
        os._exit(0)  # do not wait on store threads a library may leave behind
    out = run(args.sessions, args.ttl, args.workers, inproc=not args.http_only, http=not args.inproc_only,
              script=args.script)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
