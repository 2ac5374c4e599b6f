"""Run every benchmark and write bench/results/{results.md,results.json,*.png} and the README's results section.

    .venv/bin/python bench/run_all.py                 # everything, ~10 minutes on 2 cores
    .venv/bin/python bench/run_all.py --quick         # smaller counts, to check the scripts work (~3 min)

Order: (1+2) concurrency rounds, real app and baselines, while nothing else of ours runs; (3) memory
over HTTP - and while its app sits idle waiting for the TTL to pass, the in-process benchmarks
(memory breakdown, session path (4), Gradio overheads) run in child processes; then the report.
Every app is started here on 127.0.0.1, driven, and stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import concurrency  # noqa: E402
import memory_bench  # noqa: E402
import report  # noqa: E402
from common import BENCH, RESULTS, ROOT, bench_env, loadavg, machine_info  # noqa: E402


class Background:
    """Child-process benchmarks run one after another in a thread (started while the memory app idles)."""

    def __init__(self, jobs: list[tuple[str, list[str]]], log):
        self.jobs = jobs
        self.log = log
        self.results: dict = {}
        self.thread: threading.Thread | None = None

    def _run(self) -> None:
        env = bench_env()
        env.pop("CMW_LOG_LEVEL", None)
        if os.environ.get("DATABASE_URL"):
            env["DATABASE_URL"] = os.environ["DATABASE_URL"]
        for name, argv in self.jobs:
            out = Path(tempfile.mkstemp(prefix=f"cmw-bench-{name}-", suffix=".json")[1])
            t0 = time.monotonic()
            try:
                proc = subprocess.run([sys.executable, *argv, "--json", str(out)], cwd=str(ROOT), env=env,
                                      capture_output=True, text=True, timeout=900)
                if proc.returncode != 0:
                    self.results[name] = {"error": proc.stderr[-2000:]}
                else:
                    self.results[name] = json.loads(out.read_text())
                    for line in proc.stdout.strip().splitlines():
                        self.log(f"  [{name}] {line}")
            except subprocess.TimeoutExpired:
                self.results[name] = {"error": "timed out"}
            finally:
                out.unlink(missing_ok=True)
            self.results[name + "_elapsed_s"] = time.monotonic() - t0

    def start(self):
        self.thread = threading.Thread(target=self._run, name="bench-background", daemon=True)
        self.thread.start()
        return self.finish

    def finish(self) -> dict:
        if self.thread is None:
            self._run()
        else:
            self.thread.join()
        return self.results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: check that everything runs")
    parser.add_argument("--apps", nargs="+", default=["cmw", "cmw-per-token", "cmw-tuned", "cmw-tuned-2proc", "naive"],
                        choices=sorted(concurrency.APPS), help="apps for the concurrency rounds")
    parser.add_argument("--ns", nargs="+", type=int, default=None)
    parser.add_argument("--deadline", type=float, default=20.0, help="seconds before a round's unserved turns are cut")
    parser.add_argument("--sessions", type=int, default=None, help="live sessions for the memory benchmark")
    parser.add_argument("--ttl", type=float, default=None, help="idle TTL of the memory benchmark app")
    parser.add_argument("--skip", nargs="*", default=[], choices=["concurrency", "memory", "session_path"])
    parser.add_argument("--reuse", action="store_true",
                        help="keep the sections of the existing results.json that --skip leaves out")
    parser.add_argument("--max-load", type=float, default=None,
                        help="wait (up to 10 min) until the 1-minute load average is below this before starting")
    args = parser.parse_args()

    ns = args.ns or ([1, 10, 50] if args.quick else list(concurrency.DEFAULT_NS))
    sessions = args.sessions or (1000 if args.quick else 10000)
    ttl = args.ttl or (20.0 if args.quick else 200.0)
    # the before/after variants only need the rounds that the targets talk about
    short = [n for n in ns if n in (1, 100, 200)] or ns
    ns_for = {k: short for k in concurrency.APPS if k not in ("cmw", "naive")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_lines: list[str] = []

    def log(message: str) -> None:
        print(message, flush=True)
        log_lines.append(message)

    if args.max_load is not None:
        waited = time.monotonic()
        while loadavg()[0] > args.max_load and time.monotonic() - waited < 600:
            log(f"waiting for load {loadavg()[0]:.2f} < {args.max_load}")
            time.sleep(15)

    command = ".venv/bin/python bench/run_all.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    started = time.time()
    res: dict = {"command": command, "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "machine": machine_info(), "load_start": loadavg(), "token_delay_s": concurrency.TOKEN_DELAY,
                 "notes": []}
    log(f"machine: {res['machine']}; load {res['load_start']}")
    previous = {}
    if args.reuse and (RESULTS / "results.json").exists():
        previous = json.loads((RESULTS / "results.json").read_text())
        for section in args.skip:
            if section in previous:
                res[section] = previous[section]
                when = previous[section].get("measured_at", previous.get("started"))
                res[section]["measured_at"] = when
                res["notes"].append(f"section '{section}' reused from the run of {when} "
                                    f"(load at its start: {previous[section].get('load_at_start', '?')})")

    if "concurrency" not in args.skip:
        load = loadavg()
        res["concurrency"] = concurrency.run(args.apps, ns, args.deadline, log=log, ns_for=ns_for)
        res["concurrency"].update(measured_at=res["started"], load_at_start=[round(x, 2) for x in load])

    jobs: list[tuple[str, list[str]]] = []
    if "memory" not in args.skip:
        jobs.append(("memory_inproc", [str(BENCH / "memory_bench.py"), "--inproc-only", "--sessions", str(sessions)]))
    if "session_path" not in args.skip:
        sp = ["--requests", "5000", "--sessions", "300"] if args.quick else []
        jobs.append(("session_path", [str(BENCH / "session_path.py"), *sp]))
    jobs.append(("gradio_overheads", [str(BENCH / "gradio_overheads.py")]))
    background = Background(jobs, log)

    if "memory" not in args.skip:
        load = loadavg()
        res["memory"] = memory_bench.run(sessions, ttl, inproc=False, http=True, log=log, during_wait=background.start)
        res["memory"].update(measured_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                             load_at_start=[round(x, 2) for x in load])
        extra = res["memory"]["http"].pop("during_wait", None) or background.finish()
    else:
        extra = background.finish()
    if "memory_inproc" in extra and "memory" in res:
        res["memory"]["inproc"] = extra["memory_inproc"].get("inproc", extra["memory_inproc"])
    if "session_path" in extra:
        res["session_path"] = extra["session_path"]
        res["session_path"]["measured_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    res["gradio_overheads"] = extra.get("gradio_overheads")
    for name, value in extra.items():
        if isinstance(value, dict) and "error" in value:
            log(f"!! {name} failed: {value['error']}")
            res["notes"].append(f"{name} failed: {value['error'][-300:]}")

    res["load_end"] = loadavg()
    res["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    res["duration_s"] = time.time() - started
    res["log"] = log_lines
    (RESULTS / "results.json").write_text(json.dumps(res, indent=2, default=str))
    report.render(res)
    log(f"wrote {RESULTS / 'results.md'}, {RESULTS / 'results.json'}, plots; took {res['duration_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
