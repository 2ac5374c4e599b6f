"""Profile the app under load: py-spy samples the app process while the load generator runs rounds.

    .venv/bin/pip install py-spy            # once
    .venv/bin/python bench/profile_app.py [--n 100] [--rounds 3] [--app cmw] [--env CMW_STREAM_INTERVAL=0]

Writes bench/results/profile-<app>-N<n>.txt: the functions with the most inclusive and self samples
(py-spy "raw" collapsed stacks of the thread holding the GIL, aggregated here) - enough to see where the app's CPU goes per turn.
Only the app process started by this script is sampled, by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, AppProcess, bench_env  # noqa: E402
from concurrency import APPS, TOKEN_DELAY, _line, discover, run_round  # noqa: E402


# innermost marker wins: where a GIL sample's time is attributed
CATEGORIES = [
    ("Gradio per-event analytics summary (pandas)", ("compute_analytics_summary",)),
    ("page loads (GET /, outside the timed window)", ("App.create_app.<locals>.main ",)),
    ("agent run (LangGraph + LangChain + offline model, per-token callbacks)",
     ("CmwAgent.stream_turn", "langgraph/", "langchain_core/", "langchain/", "offline_model.py")),
    ("app handler (session, render, throttle)", ("ChatHandlers.",)),
    ("Gradio processing (process_api, pre/postprocess, diffs)", ("call_process_api", "Blocks.process_api",
                                                                 "Queue.process_events", "traverse")),
    ("SSE streaming (queue/data writes)", ("StreamingResponse", "sse_stream", "queue_data")),
    ("HTTP request handling (uvicorn/starlette/fastapi, joins)", ("run_asgi", "RequestResponseCycle",
                                                                  "H11Protocol", "httptools")),
    ("Gradio queue loops / state sweeps", ("start_processing", "start_progress_updates", "notify_clients",
                                           "_delete_state", "delete_all_expired_state")),
    ("asyncio scheduling", ("_run_once", "Handle._run")),
]


def categorize(frames: list[str]) -> str:
    if any("security/" in f for f in frames[-1:]):
        return "security middleware (own frames)"
    for frame in reversed(frames):
        for name, markers in CATEGORIES:
            if any(m in frame for m in markers):
                return name
    return "other (threads, interpreter)"


def summarize(raw: Path, top: int = 45) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    cats: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
        cats[categorize(frames)] += n
    out = [f"{total} samples (idle excluded)\n", "== by category (innermost marker) ==\n"]
    out += [f"{100 * c / total:5.1f}%  {name}\n" for name, c in cats.most_common()]
    out += ["\n== inclusive ==\n"]
    out += [f"{100 * c / total:5.1f}%  {f}\n" for f, c in inclusive.most_common(top)]
    out += ["\n== self ==\n"] + [f"{100 * c / total:5.1f}%  {f}\n" for f, c in own.most_common(top)]
    return "".join(out)


async def drive(app: AppProcess, n: int, rounds: int) -> None:
    endpoint = await discover(app.url)
    for k in range(rounds):
        print(_line(await run_round(app, endpoint, n, first_id=1 + k * n, deadline=120, recall=0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", default="cmw", choices=sorted(APPS))
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--env", nargs="*", default=[], help="extra KEY=VALUE settings for the app")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    spec = APPS[args.app]
    extra = dict(kv.split("=", 1) for kv in args.env)
    env = bench_env(CMW_OFFLINE_TOKEN_DELAY=TOKEN_DELAY, **spec.env, **extra)
    with AppProcess(args.app, spec.script, env) as app:
        asyncio.run(drive(app, 10, 1))  # warm-up
        app.wait_idle()
        raw = Path(tempfile.mkdtemp()) / "raw.txt"
        spy = subprocess.Popen([pyspy, "record", "--pid", str(app.pid), "--rate", "250", "--gil", "--format", "raw",
                                "--output", str(raw), "--nonblocking"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        asyncio.run(drive(app, args.n, args.rounds))
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT; only the PID started here
        spy.wait(timeout=30)
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = "-".join([args.app, f"N{args.n}"] + [kv.replace("=", "") for kv in args.env])
    target = RESULTS / f"profile-{tag}.txt"
    target.write_text(summarize(raw))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
