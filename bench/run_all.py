"""Run every benchmark and write bench/results/{results.md,results.json,*.png} and the README's results section.

    .venv/bin/python bench/run_all.py            # everything, ~11 minutes on 2 cores
    .venv/bin/python bench/run_all.py --quick    # tiny counts, well under a minute: every benchmark still
                                                 # works (CI runs it); writes to a temporary folder only

Order: (1+2) concurrency rounds - the real app as one process (`cmw`) and as `--workers 2` behind HAProxy
(`cmw-w2`), the bare ChatInterface and the naive baseline, then 5-turns-per-session rounds for cmw and
cmw-w2 - while nothing else of ours runs; the failover figure (bench/failover.py, in a child process);
(3) memory over HTTP - and while its app sits idle waiting for the TTL to pass, the resume benchmark (4)
runs in a child process; then the report. Every app is started here on 127.0.0.1, driven, and stopped by
its PID.

Exit status 1 when a benchmark broke (raised, or its child process failed) - and with --quick also when
the app's replies were not all clean (an error, a leak, an unserved turn) - after writing what it has.
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
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import concurrency  # noqa: E402
import memory_bench  # noqa: E402
import report  # noqa: E402
from common import BENCH, RESULTS, ROOT, bench_env, loadavg, machine_info  # noqa: E402

FULL_APPS = ["cmw", "cmw-w2", "chatinterface", "naive", "cmw-per-token", "cmw-tuned"]
QUICK_APPS = ["cmw", "cmw-w2", "chatinterface", "naive"]
MULTI_APPS = ("cmw", "cmw-w2")  # also measured with several turns per session
FULL_MULTI_NS = [1, 10, 100]
# Checked by --quick only, beside the others (not part of the figures; each prints its own)
QUICK_SIDE = ("binding_flood.py", "cookie_header.py", "file_upload.py", "failover.py")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


class Child:
    """The resume benchmark in its own interpreter, started in a thread (while the memory app idles)."""

    def __init__(self, argv: list[str], log, timeout: float):
        self.argv, self.log, self.timeout = argv, log, timeout
        self.result: dict = {}
        self.thread: threading.Thread | None = None

    def _run(self) -> None:
        env = bench_env()
        env.pop("CMW_LOG_LEVEL", None)
        if os.environ.get("DATABASE_URL"):
            env["DATABASE_URL"] = os.environ["DATABASE_URL"]
        out = Path(tempfile.mkstemp(prefix="cmw-bench-resume-", suffix=".json")[1])
        try:
            proc = subprocess.run([sys.executable, *self.argv, "--json", str(out)], cwd=str(ROOT), env=env,
                                  capture_output=True, text=True, timeout=self.timeout)
            for line in proc.stdout.strip().splitlines():
                self.log(f"  {line}")
            if proc.returncode != 0:
                self.result = {"error": f"exit status {proc.returncode}: {proc.stderr[-2000:]}"}
            else:
                self.result = json.loads(out.read_text())
        except subprocess.TimeoutExpired:
            self.result = {"error": f"timed out after {self.timeout:.0f} s"}
        finally:
            out.unlink(missing_ok=True)

    def start(self):
        self.thread = threading.Thread(target=self._run, name="bench-resume", daemon=True)
        self.thread.start()
        return self.finish

    def finish(self) -> dict:
        if self.thread is None:
            self._run()
        else:
            self.thread.join()
        return self.result


def run_failover(log, timeout: float = 300) -> dict:
    """bench/failover.py (full size) in its own interpreter: the failover figure."""
    out = Path(tempfile.mkstemp(prefix="cmw-bench-failover-", suffix=".json")[1])
    try:
        log("[failover] app_ng.py --workers 2: SIGKILL the worker serving person 0 mid-stream")
        proc = subprocess.run([sys.executable, str(BENCH / "failover.py"), "--json", str(out)], cwd=str(ROOT),
                              env=bench_env(), capture_output=True, text=True, timeout=timeout)
        for line in proc.stdout.strip().splitlines():
            log(f"  {line}")
        if not out.stat().st_size:
            raise RuntimeError(f"failover.py exit status {proc.returncode}: {proc.stderr[-2000:]}")
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def unclean(res: dict) -> list[str]:
    """Quick-run checks: every turn of every app served and exactly right, no leak; memory and resume ran."""
    found = []
    for key, app in (res.get("concurrency") or {}).get("apps", {}).items():
        for r in app["rounds"] + (app.get("multi_turn") or {}).get("rounds", []):
            leaks = 0 if key == "naive" else r["leaks"]  # the naive baseline shares one memory by design
            expected = r.get("expected", r["n"])
            if r["ok"] != expected or r["errors"] or r["unserved_at_deadline"] or leaks:
                found.append(f"concurrency {key} N={r['n']} x{r.get('turns_per_session', 1)}: {r['ok']}/{expected} "
                             f"ok, errors {r['error_kinds']}, unserved {r['unserved_at_deadline']}, leaks {leaks}")
        if app.get("left_behind"):
            found.append(f"concurrency {key}: processes left after stopping it: {app['left_behind']}")
    http = (res.get("memory") or {}).get("http")
    if http is not None and (http.get("errors") or "after_expiry" not in http):
        found.append(f"memory: errors {http.get('errors')}")
    sp = res.get("session_path")
    if sp is not None and not (sp.get("sqlite") or {}).get("resume", {}).get("messages"):
        found.append("resume: no messages loaded back")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny counts, results in a temporary folder: check that every benchmark works")
    parser.add_argument("--apps", nargs="+", default=None, choices=sorted(concurrency.APPS),
                        help="apps for the concurrency rounds")
    parser.add_argument("--ns", nargs="+", type=int, default=None)
    parser.add_argument("--deadline", type=float, default=None, help="seconds before a round's unserved turns are cut")
    parser.add_argument("--sessions", type=int, default=None, help="live sessions for the memory benchmark")
    parser.add_argument("--ttl", type=float, default=None, help="idle TTL of the memory benchmark app")
    parser.add_argument("--multi-ns", nargs="*", type=int, default=None,
                        help=f"N for the several-turns-per-session rounds of {', '.join(MULTI_APPS)} "
                             f"(default {FULL_MULTI_NS}; quick 1 3; none: no such rounds)")
    parser.add_argument("--turns", type=int, default=5, help="turns per session in those rounds")
    parser.add_argument("--skip", nargs="*", default=[], choices=["concurrency", "failover", "memory", "session_path"])
    parser.add_argument("--reuse", action="store_true",
                        help="keep the sections of the existing results.json that --skip leaves out")
    parser.add_argument("--max-load", type=float, default=None,
                        help="wait (up to 10 min) until the 1-minute load average is below this before starting")
    args = parser.parse_args()

    quick = args.quick
    apps = args.apps or (QUICK_APPS if quick else FULL_APPS)
    ns = args.ns or ([1, 3] if quick else list(concurrency.DEFAULT_NS))
    multi_ns = args.multi_ns if args.multi_ns is not None else ([1, 3] if quick else FULL_MULTI_NS)
    multi_ns_for = {k: multi_ns for k in MULTI_APPS if k in apps}
    token_delay = 0.005 if quick else concurrency.TOKEN_DELAY  # quick: a 50-token turn in 0.25 s
    deadline = args.deadline or (15.0 if quick else 20.0)
    sessions = args.sessions or (20 if quick else 10000)
    ttl = args.ttl or (2.0 if quick else 200.0)
    resume_argv = [str(BENCH / "session_path.py"), *(["--turns", "10", "--loads", "20"] if quick else [])]
    # the before/after variants only need the rounds that the targets talk about
    short = [n for n in ns if n in (1, 100, 200)] or ns
    ns_for = {k: short for k in ("cmw-per-token", "cmw-tuned", "cmw-tuned-2proc")}
    results = Path(tempfile.mkdtemp(prefix="cmw-bench-quick-")) if quick else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    log_lines: list[str] = []
    broken: list[str] = []

    def log(message: str) -> None:
        print(message, flush=True)
        log_lines.append(message)

    def attempt(name: str, fn):
        try:
            return fn()
        except Exception:
            log(f"!! {name} broke:\n{traceback.format_exc()}")
            broken.append(f"{name}: {traceback.format_exc(limit=1).strip().splitlines()[-1]}")
            return None

    if args.max_load is not None:
        waited = time.monotonic()
        while loadavg()[0] > args.max_load and time.monotonic() - waited < 600:
            log(f"waiting for load {loadavg()[0]:.2f} < {args.max_load}")
            time.sleep(15)

    # quick: the side benchmarks (security, files; their own --quick) start now and run beside the others
    side = {script: subprocess.Popen([sys.executable, str(BENCH / script), "--quick"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=bench_env())
            for script in (QUICK_SIDE if quick else ())}
    command = ".venv/bin/python bench/run_all.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    started = time.time()
    res: dict = {"command": command, "started": now(), "machine": machine_info(), "load_start": loadavg(),
                 "token_delay_s": token_delay, "notes": []}
    log(f"machine: {res['machine']}; load {res['load_start']}")
    if args.reuse and (RESULTS / "results.json").exists():
        previous = json.loads((RESULTS / "results.json").read_text())
        for section in args.skip:
            if section in previous:
                res[section] = previous[section]
                when = previous[section].get("measured_at", previous.get("started"))
                res[section]["measured_at"] = when
                res["notes"].append(f"section '{section}' reused from the run of {when} "
                                    f"(load at its start: {previous[section].get('load_at_start', '?')})")

    def measured(fn):  # a section's result, stamped with when it ran and the load at its start
        load, when = [round(x, 2) for x in loadavg()], now()
        result = fn()
        return {**result, "measured_at": when, "load_at_start": load}

    def run_concurrency(keys: list[str]) -> dict:
        tagged = (lambda message: log(f"{message}  [{keys[0]}]")) if quick else log  # quick: apps interleave
        return concurrency.run(keys, ns, deadline, token_delay, log=tagged, ns_for=ns_for, settle=not quick,
                               multi_ns_for=multi_ns_for, turns=args.turns)

    child = Child(resume_argv, log, timeout=120 if quick else 900) if "session_path" not in args.skip else None
    jobs = []
    if "concurrency" not in args.skip:  # quick: one job per app, so that all of them run at once
        jobs += ([(f"concurrency {key}", partial(run_concurrency, [key])) for key in apps] if quick
                 else [("concurrency", partial(run_concurrency, apps))])
    if "failover" not in args.skip and not quick:  # quick: failover.py --quick runs beside, as a side check
        jobs.append(("failover", partial(run_failover, log)))
    if "memory" not in args.skip:
        jobs.append(("memory", partial(memory_bench.run, sessions, ttl, workers=8 if quick else 32, log=log,
                                       during_wait=child.start if child else None)))
    # Measurements run one after another, alone on the machine; a quick check runs them all at once.
    with ThreadPoolExecutor(len(jobs) if quick and jobs else 1) as pool:
        futures = [(name, pool.submit(attempt, name, partial(measured, job))) for name, job in jobs]
    done = [(name, future.result()) for name, future in futures]
    conc = [result for name, result in done if name.startswith("concurrency") and result]
    if conc:
        res["concurrency"] = {**conc[0], "apps": {k: v for result in conc for k, v in result["apps"].items()}}
    fail = next((result for name, result in done if name == "failover" and result), None)
    if fail:
        res["failover"] = fail
        if fail.get("problems"):
            broken.append(f"failover: {fail['problems']}")
    mem = next((result for name, result in done if name == "memory" and result), None)
    if mem:
        mem["http"].pop("during_wait", None)
        res["memory"] = mem
    if child is not None:
        resume = child.finish()  # waits for the child started during the memory wait, or runs it now
        if "error" in resume:
            log(f"!! resume broke: {resume['error']}")
            broken.append(f"resume: {resume['error'][-300:]}")
        else:
            res["session_path"] = {**resume, "measured_at": now()}

    res["load_end"] = loadavg()
    res["finished"] = now()
    res["duration_s"] = time.time() - started
    res["log"] = log_lines
    res["notes"] += [f"broke: {b}" for b in broken]
    (results / "results.json").write_text(json.dumps(res, indent=2, default=str))
    attempt("report", lambda: report.render(res, results, update_readme=not quick))
    if quick:
        broken += [f"not clean: {u}" for u in unclean(res)]
        for script, proc in side.items():  # side benchmarks: still run, still hold
            try:
                out, err = proc.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()  # only the child started above, by its handle
                out, err = proc.communicate()
            log(f"{script} --quick: exit {proc.returncode}\n{out.strip()}")
            if proc.returncode:
                broken.append(f"{script}: {err.strip()[-3000:]}")
    log(f"wrote {results / 'results.md'}, {results / 'results.json'}, plots; took {res['duration_s'] / 60:.1f} min")
    if broken:
        log("FAILED:\n" + "\n".join(f"- {b}" for b in broken))
        sys.exit(1)


if __name__ == "__main__":
    main()
