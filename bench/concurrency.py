"""Benchmark 1 + 2: N concurrent chat sessions against the real app and against the naive baseline.

Each app is started as a child process on 127.0.0.1 with the offline model at a fixed per-token delay.
For every N, N simulated users (own HTTP client + cookie jar each, one session_hash each) send one
~50-token turn at the same moment through Gradio's queue protocol (see loadgen.py). Per round we record:

* wall time of the round (first join sent -> last reply completed) and wall(N)/wall(1);
* time to first token (TTFT) p50/p99, and the first-token overhead = TTFT - the model's own first-token
  delay (the offline model sleeps one token delay before its first token);
* mean gap between streamed tokens (ideal: the token delay) and p99 gap between UI updates;
* errors (HTTP errors, error events, wrong replies) and turns not served before the round deadline;
* app CPU seconds (from /proc via psutil) during the round and per 1,000 streamed tokens, next to the
  load generator's own CPU and the CPU used by everything else on the machine;
* canary leaks: every reply token carries its session's id (``Canary<i>.<j>``); a reply holding any
  other id is a leak. After each round with N >= 10 a few sessions also ask "What's my name?" (recall):
  the answer must be their own name.

With ``--turns 5`` (``turns=`` in :func:`run`) every session sends 5 messages in a row on the same
session_hash - its name, "What's my name?", its name, ... - and every turn is measured as above (the
recall turns must answer the session's own name); CPU is then also given per turn.

    .venv/bin/python bench/concurrency.py [--ns 1 10 50 100 200] [--apps cmw cmw-w2 chatinterface naive]
                                          [--deadline 45] [--turns 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import AppProcess, SupervisedApp, bench_env, loadavg  # noqa: E402
from loadgen import (Turn, User, canary_message, canary_reply, discover, foreign_canaries,  # noqa: E402
                     new_session_hash, recall_reply)

TOKEN_DELAY = 0.02
DEFAULT_NS = (1, 10, 50, 100, 200)


@dataclass(frozen=True)
class AppSpec:
    key: str
    label: str
    script: str
    env: dict
    workers: int = 1  # >1: that many app processes, each user pinned to one (sticky sessions)
    supervised: int = 0  # >0: `app_ng.py --workers <this>`: the supervisor, HAProxy, every user through it


class Fleet:
    """Several app processes driven as one: users are pinned round-robin, CPU and RSS are summed."""

    def __init__(self, apps: list[AppProcess]):
        self.apps = apps

    def url_for(self, i: int) -> str:
        return self.apps[i % len(self.apps)].url

    @property
    def url(self) -> str:
        return self.apps[0].url

    def cpu_seconds(self) -> float:
        return sum(a.cpu_seconds() for a in self.apps)

    def rss(self) -> int:
        return sum(a.rss() for a in self.apps)

    def wait_idle(self) -> None:
        for a in self.apps:
            a.wait_idle()

    def __enter__(self) -> "Fleet":
        started = []
        try:
            for a in self.apps:
                started.append(a.start())
        except Exception:
            for a in started:
                a.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for a in self.apps:
            a.stop()


APPS = {
    "cmw": AppSpec("cmw", "CMW app (app_ng.py, defaults: `--workers 1`, one process)", "app_ng.py", {}),
    "cmw-w2": AppSpec("cmw-w2", "CMW app, `app_ng.py --workers 2`: the supervisor, 2 workers and HAProxy "
                      "(owner-cookie affinity); the load goes to HAProxy's port; app CPU = both workers "
                      "(HAProxy + supervisor apart: `proxy CPU s`)", "app_ng.py", {}, supervised=2),
    "chatinterface": AppSpec("chatinterface", "bare ChatInterface, concurrency on (bench/naive_app.py with "
                             "CMW_BENCH_BARE=1): the same tokens at the same delay, one yield per token, no "
                             "agent, no store; Gradio's analytics summary every 1,000 events as in the app",
                             "bench/naive_app.py", {"CMW_BENCH_BARE": "1", "GRADIO_ANALYTICS_CACHE_FREQUENCY": "1000"}),
    "cmw-per-token": AppSpec("cmw-per-token", "CMW app, one yield per token (CMW_STREAM_INTERVAL=0)",
                             "app_ng.py", {"CMW_STREAM_INTERVAL": "0"}),
    "cmw-tuned": AppSpec("cmw-tuned", "CMW app, settings-only tuning: CMW_STREAM_INTERVAL=0.1 + Gradio's per-event "
                         "analytics summary off (GRADIO_ANALYTICS_CACHE_FREQUENCY=1e9)", "app_ng.py",
                         {"CMW_STREAM_INTERVAL": "0.1", "GRADIO_ANALYTICS_CACHE_FREQUENCY": "1000000000"}),
    "cmw-tuned-2proc": AppSpec("cmw-tuned-2proc", "cmw-tuned as 2 app processes, each user pinned to one "
                               "(needs a sticky proxy and a shared store in production)", "app_ng.py",
                               {"CMW_STREAM_INTERVAL": "0.1", "GRADIO_ANALYTICS_CACHE_FREQUENCY": "1000000000"},
                               workers=2),
    "naive": AppSpec("naive", "naive ChatInterface (bench/naive_app.py, Gradio defaults)",
                     "bench/naive_app.py", {}),
}


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _busy(cpu) -> float:
    return cpu.user + cpu.nice + cpu.system + cpu.irq + cpu.softirq + getattr(cpu, "steal", 0.0)


def session_turn(i: int, t: int) -> tuple[str, str]:
    """Turn ``t`` (0-based) of session ``i``: its message and the exact reply expected."""
    if t % 2:
        return "What's my name?", recall_reply(i)
    return canary_message(i), canary_reply(i)


async def _session(user: User, endpoint, session_hash: str, records: list[Turn]) -> None:
    for record in records:
        await user.turn(endpoint, session_hash, record.message, record)
        if not record.ok:
            return


async def run_round(app: AppProcess, endpoint, n: int, *, first_id: int, deadline: float,
                    recall: int = 4, token_delay: float = TOKEN_DELAY, turns: int = 1) -> dict:
    url_for = getattr(app, "url_for", lambda i: app.url)
    proxy_cpu = getattr(app, "proxy_cpu_seconds", lambda: 0.0)
    users = [User(url_for(i), timeout=deadline + 60) for i in range(n)]
    try:
        opened = await asyncio.gather(*(u.open("/") for u in users), return_exceptions=True)
        open_errors = sum(1 for s in opened if s != 200)
        ids = list(range(first_id, first_id + n))
        hashes = [new_session_hash() for _ in ids]
        per_session = [[Turn(h, session_turn(i, t)[0]) for t in range(turns)] for i, h in zip(ids, hashes)]
        records = [r for rs in per_session for r in rs]
        expected = [session_turn(i, t)[1] for i in ids for t in range(turns)]
        owner = [i for i in ids for _ in range(turns)]

        cpu0, px0, lg0, sys0 = app.cpu_seconds(), proxy_cpu(), time.process_time(), _busy(psutil.cpu_times())
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(_session(u, endpoint, h, rs)) for u, h, rs in zip(users, hashes, per_session)]
        done, pending = await asyncio.wait(tasks, timeout=deadline)
        t1 = time.perf_counter()
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        cpu1, px1, lg1, sys1 = app.cpu_seconds(), proxy_cpu(), time.process_time(), _busy(psutil.cpu_times())
        for task, rs in zip(tasks, per_session):  # turns a session never sent
            for r in rs:
                if r.t_join == 0.0 and r.error is None:
                    r.error = "cancelled (deadline)" if task in pending else "not sent: an earlier turn failed"

        ok = [r for r in records if r.ok]
        unserved = [r for r in records if r.error == "cancelled (deadline)"]
        leaks = [r for r, i in zip(records, owner) if foreign_canaries(r.text, i)]
        wrong = [r for r, want in zip(records, expected) if r.ok and r.text != want and r not in leaks]
        errors: dict[str, int] = {}
        for r in records:
            if r.error and r not in unserved:
                key = r.error.split(":")[0]
                errors[key] = errors.get(key, 0) + 1
        if wrong:
            errors["wrong reply"] = len(wrong)

        ttft = [r.ttft for r in ok if r.ttft is not None]
        gaps = [r.token_gap for r in ok if r.token_gap is not None]
        update_gaps = [b - a for r in ok for a, b in zip(r.updates, r.updates[1:])]
        tokens = sum(r.tokens for r in ok)
        app_cpu = cpu1 - cpu0
        wall = (max(r.t_done for r in ok) - t0) if len(ok) == len(records) else (t1 - t0)

        # recall: a few sessions ask for their name; the answer must be their own (shared memory fails)
        recall_checked = recall_leaks = recall_wrong = 0
        firsts = [rs[0] for rs in per_session]
        if n >= 10 and recall and any(r.ok for r in firsts):
            picks = [(users[k], r, ids[k]) for k, r in enumerate(firsts) if r.ok][: recall]
            answers = await asyncio.wait_for(asyncio.gather(
                *(u.turn(endpoint, r.session_hash, "What's my name?") for u, r, _ in picks)), timeout=60)
            for (_, _, i), answer in zip(picks, answers):
                recall_checked += 1
                if foreign_canaries(answer.text, i):
                    recall_leaks += 1
                elif answer.text != recall_reply(i):
                    recall_wrong += 1
        return {
            "n": n, "turns_per_session": turns, "expected": len(records), "ok": len(ok), "open_errors": open_errors,
            "errors": sum(errors.values()), "error_kinds": errors, "unserved_at_deadline": len(unserved),
            "error_samples": sorted({r.error for r in records if r.error and r not in unserved})[:5],
            "deadline_s": deadline, "wall_s": wall,
            "ttft_p50_ms": _ms(pct(ttft, 50)), "ttft_p99_ms": _ms(pct(ttft, 99)), "ttft_max_ms": _ms(max(ttft, default=None)),
            "first_token_overhead_p50_ms": _ms(None if not ttft else pct(ttft, 50) - token_delay),
            "first_token_overhead_p99_ms": _ms(None if not ttft else pct(ttft, 99) - token_delay),
            "token_gap_mean_ms": _ms(float(np.mean(gaps)) if gaps else None),
            "update_gap_p50_ms": _ms(pct(update_gaps, 50)), "update_gap_p99_ms": _ms(pct(update_gaps, 99)),
            "turn_wall_p99_s": pct([r.wall for r in ok], 99),
            "tokens_streamed": tokens,
            "app_cpu_s": app_cpu, "app_cpu_per_1k_tokens_s": (app_cpu / tokens * 1000) if tokens else None,
            "app_cpu_per_turn_ms": (app_cpu / len(ok) * 1000) if ok else None,
            "app_cpu_share_of_core": app_cpu / (t1 - t0), "proxy_cpu_s": px1 - px0,
            "loadgen_cpu_s": lg1 - lg0,
            "other_cpu_s": max(0.0, (sys1 - sys0) - app_cpu - (px1 - px0) - (lg1 - lg0)),
            "stream_leaks": len(leaks), "recall_checked": recall_checked, "recall_leaks": recall_leaks,
            "recall_wrong": recall_wrong, "leaks": len(leaks) + recall_leaks,
        }
    finally:
        await asyncio.gather(*(u.aclose() for u in users), return_exceptions=True)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


async def _series(app: AppProcess, ns, deadline: float, log, settle: bool = True, multi_ns=(),
                  turns: int = 5) -> tuple[list[dict], list[dict], dict]:
    """Warm-up, idle CPU, then one round per N (one turn per session), then one round per N of
    ``multi_ns`` with ``turns`` turns per session. ``settle=False`` (quick runs) skips waiting for the
    app to go idle between rounds and the idle CPU reading."""
    endpoint = await discover(app.url, "chat")
    # warm-up: imports, first-call caches, connection setup; not recorded
    await run_round(app, endpoint, 1, first_id=900_000, deadline=deadline, recall=0)
    await run_round(app, endpoint, min(10, max([*ns, *multi_ns])), first_id=900_100, deadline=deadline, recall=0)
    idle = {"idle_cpu_share_of_core": None}
    if settle:
        app.wait_idle()
        c0, t0 = app.cpu_seconds(), time.monotonic()
        await asyncio.sleep(2.0)
        idle["idle_cpu_share_of_core"] = (app.cpu_seconds() - c0) / (time.monotonic() - t0)
    rounds: list[dict] = []
    multi: list[dict] = []
    first_id = 1
    plan = [(n, 1) for n in ns] + [(n, turns) for n in multi_ns]
    for n, t in plan:
        if settle:
            app.wait_idle()
        load = loadavg()[0]
        cut = deadline * max(1.0, t / 2)  # several turns in a row get more time
        result = await run_round(app, endpoint, n, first_id=first_id, deadline=cut, turns=t)
        result["loadavg_1m_before"] = load
        first_id += n
        (rounds if t == 1 else multi).append(result)
        log(_line(result))
    idle["rss_after_mib"] = app.rss() / 2**20
    return rounds, multi, idle


def _line(r: dict) -> str:
    def f(v, spec=".0f"):
        return "-" if v is None else format(v, spec)
    turns = r.get("turns_per_session", 1)
    return (f"  N={r['n']:>4}{f' x{turns} turns' if turns > 1 else ''}  ok={r['ok']:>4}/{r.get('expected', r['n'])}  "
            f"err={r['errors']}  unserved={r['unserved_at_deadline']}  "
            f"wall={r['wall_s']:.2f}s  ttft p50/p99={f(r['ttft_p50_ms'])}/{f(r['ttft_p99_ms'])} ms  "
            f"gap={f(r['token_gap_mean_ms'], '.1f')} ms  cpu/turn={f(r.get('app_cpu_per_turn_ms'), '.1f')} ms  "
            f"cpu/1k tok={f(r['app_cpu_per_1k_tokens_s'], '.2f')} s  "
            f"leaks={r['leaks']} (recall {r['recall_leaks']}/{r['recall_checked']})  "
            f"lg cpu={r['loadgen_cpu_s']:.2f}s proxy={r.get('proxy_cpu_s', 0):.2f}s other={r['other_cpu_s']:.2f}s  "
            f"load={r.get('loadavg_1m_before', 0):.2f}")


def _with_ratio(rounds: list[dict]) -> list[dict]:
    base = rounds[0]["wall_s"] if rounds and rounds[0]["ok"] == rounds[0]["expected"] else None
    for r in rounds:
        r["wall_ratio"] = (r["wall_s"] / base) if base else None
    return rounds


def start_app(key: str, token_delay: float):
    """The app under test, not yet started: one process, a fleet, or the supervisor."""
    spec = APPS[key]
    env = bench_env(CMW_OFFLINE_TOKEN_DELAY=token_delay, **spec.env)
    if spec.supervised:
        return SupervisedApp(key, env, workers=spec.supervised)
    return Fleet([AppProcess(f"{key}{w}", spec.script, dict(env)) for w in range(spec.workers)])


def run(apps=("cmw", "naive"), ns=DEFAULT_NS, deadline: float = 45.0, token_delay: float = TOKEN_DELAY,
        log=print, ns_for: dict | None = None, settle: bool = True, multi_ns_for: dict | None = None,
        turns: int = 5) -> dict:
    """Rounds for each app; ``ns_for`` may give an app its own (shorter) list of N; ``multi_ns_for`` gives
    the apps that also run ``turns``-turns-per-session rounds their list of N."""
    out = {"token_delay_s": token_delay, "ns": list(ns), "deadline_s": deadline, "turns": turns, "apps": {}}
    for key in apps:
        spec = APPS[key]
        app_ns = (ns_for or {}).get(key, ns)
        multi_ns = (multi_ns_for or {}).get(key, ())
        log(f"[concurrency] {spec.label}")
        with start_app(key, token_delay) as app:
            rounds, multi, idle = asyncio.run(_series(app, app_ns, deadline, log, settle, multi_ns, turns))
        out["apps"][key] = {"label": spec.label, "script": spec.script, "env": spec.env, "workers": spec.workers,
                            "supervised_workers": spec.supervised, "rounds": _with_ratio(rounds),
                            "left_behind": getattr(app, "left_behind", []), **idle}
        if multi:
            out["apps"][key]["multi_turn"] = {"turns": turns, "rounds": _with_ratio(multi)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", nargs="+", default=["cmw", "cmw-w2", "chatinterface", "naive"], choices=sorted(APPS))
    parser.add_argument("--ns", nargs="+", type=int, default=list(DEFAULT_NS))
    parser.add_argument("--turns", type=int, default=5, help="turns per session of the multi-turn rounds")
    parser.add_argument("--multi-ns", nargs="*", type=int, default=[],
                        help="N for rounds of --turns turns per session, after the one-turn rounds")
    parser.add_argument("--deadline", type=float, default=45.0, help="seconds per round before unserved turns are cut")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = run(args.apps, args.ns, args.deadline, multi_ns_for={k: args.multi_ns for k in args.apps},
                  turns=args.turns)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
