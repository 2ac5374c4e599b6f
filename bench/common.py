"""Shared helpers for the benchmark scripts: start/stop an app on loopback, read its CPU and RSS, describe
the machine. Benchmarks only ever talk to 127.0.0.1 and only ever stop processes they started (by PID).
"""

from __future__ import annotations

import atexit
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
HOST = "127.0.0.1"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Variables that could make an app reach a real model or a shared store; benchmarks never pass them on.
_SCRUBBED = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CMW_MODEL", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
             "http_proxy", "https_proxy", "all_proxy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def bench_env(**overrides: str) -> dict[str, str]:
    """The environment for an app under test: offline model, loopback only, quiet, no analytics."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update({
        "GRADIO_ANALYTICS_ENABLED": "False",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "CMW_MODEL": "offline",
        "CMW_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        # every simulated user comes from 127.0.0.1: per-IP / per-owner message limits would refuse the
        # load itself, so benchmarks switch them off (0 = off); they are measured by the tests, not here
        "CMW_RATE_LIMIT_PER_MINUTE": "0",
        "CMW_IP_RATE_LIMIT_PER_MINUTE": "0",
        # ... and so would the limits on new sessions (120 per minute per address, 60 per owner): a round of
        # N=100 opens 100 sessions from one address (bench/binding_flood.py measures those limits)
        "CMW_NEW_SESSIONS_PER_MINUTE": "0",
        "CMW_NEW_SESSIONS_PER_OWNER_PER_MINUTE": "0",
    })
    env.update({k: str(v) for k, v in overrides.items()})
    return env


_RUNNING: list["AppProcess"] = []


def _stop_all() -> None:
    for proc in list(_RUNNING):
        proc.stop()


atexit.register(_stop_all)


class AppProcess:
    """One app under test, started as a child process on 127.0.0.1 and stopped by its own PID."""

    def __init__(self, name: str, script: str, env: dict[str, str], port: int | None = None):
        self.name = name
        self.script = script
        self.port = port or free_port()
        self.env = env
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"cmw-bench-{name}-"))
        self.env.setdefault("CMW_DATA_DIR", str(self.data_dir / "data"))
        self.log_path = self.data_dir / "app.log"
        self.popen: subprocess.Popen | None = None
        self.ps: psutil.Process | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def argv(self) -> list[str]:
        return [sys.executable, str(ROOT / self.script), "--host", HOST, "--port", str(self.port)]

    def ready(self, client: httpx.Client) -> bool:
        """Whether the app answers (polled every 0.25 s after the start)."""
        return client.get(f"{self.url}/config").status_code == 200

    def start(self, timeout: float = 90.0) -> "AppProcess":
        argv = self.argv()
        log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(argv, cwd=str(ROOT), env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        log.close()
        _RUNNING.append(self)
        self.ps = psutil.Process(self.popen.pid)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; log:\n{self.log_tail()}")
                try:
                    if self.ready(client):
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer on {self.url} within {timeout:.0f} s; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the app process has used so far (all its threads)."""
        assert self.ps is not None
        t = self.ps.cpu_times()
        return t.user + t.system

    def rss(self) -> int:
        assert self.ps is not None
        return self.ps.memory_info().rss

    def wait_idle(self, threshold: float = 0.15, window: float = 0.5, max_wait: float = 30.0) -> float:
        """Wait until the app uses less than ``threshold`` of a core over ``window`` s; returns that share."""
        deadline = time.monotonic() + max_wait
        share = 1.0
        while time.monotonic() < deadline:
            c0, t0 = self.cpu_seconds(), time.monotonic()
            time.sleep(window)
            share = (self.cpu_seconds() - c0) / (time.monotonic() - t0)
            if share < threshold:
                return share
        return share

    def stop(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)  # only this PID: a process this script started
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        if self in _RUNNING:
            _RUNNING.remove(self)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.popen = None

    def __enter__(self) -> "AppProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class SupervisedApp(AppProcess):
    """``app_ng.py --workers N``: the real supervisor, its N workers and HAProxy; driven through HAProxy's
    port only. CPU and RSS are the workers' (the supervisor's children running app_ng.py); HAProxy and
    the supervisor itself are read apart (:meth:`proxy_cpu_seconds`). Stopped by the supervisor's PID
    (SIGTERM: it stops its children), after which :meth:`stop` checks that none of them is left."""

    def __init__(self, name: str, env: dict[str, str], workers: int = 2, port: int | None = None):
        super().__init__(name, "app_ng.py", env, port)
        self.workers = workers
        self.seen: dict[int, psutil.Process] = {}  # every child ever observed, for the final check
        self._cpu: dict[int, float] = {}  # last CPU reading per worker PID (a restarted worker keeps its old one)
        self.left_behind: list[str] = []

    def argv(self) -> list[str]:
        return super().argv() + ["--workers", str(self.workers)]

    def ready(self, client: httpx.Client) -> bool:
        return len(self.worker_processes()) == self.workers and super().ready(client)

    def _children(self) -> list[psutil.Process]:
        assert self.ps is not None
        try:
            found = self.ps.children()
        except psutil.NoSuchProcess:
            return []
        for child in found:
            self.seen.setdefault(child.pid, child)
        return [self.seen[c.pid] for c in found]

    def worker_processes(self) -> dict[str, psutil.Process]:
        """The live workers by their CMW_WORKER_ID."""
        workers = {}
        for child in self._children():
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue
                worker_id = child.environ().get("CMW_WORKER_ID")
            except psutil.Error:
                continue
            if worker_id:
                workers[worker_id] = child
        return workers

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of every worker so far (a worker that died counts with its last reading)."""
        for child in self.worker_processes().values():
            try:
                t = child.cpu_times()
            except psutil.Error:
                continue
            self._cpu[child.pid] = t.user + t.system
        return sum(self._cpu.values())

    def proxy_cpu_seconds(self) -> float:
        """HAProxy's and the supervisor's own CPU seconds (not the app's)."""
        assert self.ps is not None
        total = 0.0
        workers = {p.pid for p in self.worker_processes().values()}
        for proc in [self.ps, *(c for c in self._children() if c.pid not in workers)]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def rss(self) -> int:
        total = 0
        for child in self.worker_processes().values():
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def stop(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self._children()  # remember the current children before they go
            self.popen.send_signal(signal.SIGTERM)  # the supervisor's PID only: it stops its children
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.left_behind.append(f"supervisor {self.popen.pid} (no exit 30 s after SIGTERM)")
                self.popen.kill()
                self.popen.wait(timeout=10)
        deadline = time.monotonic() + 10
        for pid, child in self.seen.items():
            while _alive(child) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(child):  # the very process we saw (psutil checks the PID was not reused)
                self.left_behind.append(f"{' '.join(child.cmdline()[:2])} (pid {pid})")
                child.kill()
        if self.left_behind:
            print(f"!! {self.name}: left running after the supervisor stopped (killed now): {self.left_behind}",
                  file=sys.stderr, flush=True)
        super().stop()


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def machine_info() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import version  # not the packages themselves: importing gradio takes seconds

    return {
        "cpu_model": model or platform.processor(),
        "logical_cpus": psutil.cpu_count(logical=True),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "gradio": version("gradio"),
        "langgraph": version("langgraph"),
    }


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    return f"{n:.1f} GiB"
