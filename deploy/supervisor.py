"""``python app_ng.py --workers N``: N app processes behind HAProxy, on one machine.

The supervisor is a parent and nothing more. It

* prepares once what every worker shares, so workers do not race to create it: the data directory, the
  owner-cookie key (``security.owner.load_or_create_key``) and, with SQLite, the database's WAL mode;
* starts N workers, each ``app_ng.py --host 127.0.0.1 --port P`` on a free loopback port with
  ``CMW_WORKER_ID`` (1..N) and ``CMW_WORKERS`` (N) added to its own environment, and waits until each
  answers ``GET /healthz``;
* starts HAProxy in the foreground (``haproxy -f <cfg> -db``) on --host/--port, with
  ``deploy/haproxy.cfg`` whose ``bind`` line and ``server`` lines it fills in (:func:`render_config`);
* restarts a worker that exits (same id, same port) and stops everything when HAProxy exits;
* on SIGTERM or SIGINT stops every child and waits for it. A child also gets SIGTERM if the supervisor
  itself is killed (Linux's parent-death signal), so no child outlives it.

Everything runs in the main thread: signals only set a flag that the loop reads every 0.2 s.
"""

from __future__ import annotations

import ctypes
import http.client
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from memory.leases import LEASE_TTL, expire_leases_of_process
from memory.store import SQLITE_FILE
from security.owner import load_or_create_key
from settings import Settings

log = logging.getLogger("cmw.supervisor")

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app_ng.py"
CONFIG = Path(__file__).resolve().parent / "haproxy.cfg"
WORKER_HOST = "127.0.0.1"
START_TIMEOUT = 180.0  # seconds for every worker to answer its first health check
STOP_TIMEOUT = 10.0  # seconds children get to exit after SIGTERM, then SIGKILL
STEADY = 30.0  # a worker that ran this long before exiting is restarted at once; sooner: with a growing pause
MISSING_HAPROXY = ("--workers needs HAProxy, which is not installed: install it with `apt-get install haproxy`, "
                   "or run without --workers (one process).")


@dataclass
class Child:
    """One process the supervisor keeps: how to start it, and the running one."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    process: subprocess.Popen | None = None
    started: float = 0.0
    quick_exits: int = 0  # exits in a row, each sooner than STEADY after its start
    restart_at: float | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, start_new_session=True,
                                        preexec_fn=_die_with_parent(os.getpid()))
        self.started, self.restart_at = time.monotonic(), None

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()


@dataclass
class Workers:
    children: list[Child]
    stopping: list[int] = field(default_factory=list)  # signals that asked us to stop (set by the handler)


def supervise(settings: Settings, *, host: str, port: int, workers: int) -> int:
    """Serve ``workers`` app processes behind HAProxy on host:port until a signal; the exit status."""
    haproxy = find_haproxy()
    if haproxy is None:
        raise SystemExit(MISSING_HAPROXY)
    prepare_shared(settings)
    ports = free_ports(workers)
    config_dir = Path(tempfile.mkdtemp(prefix="cmw-haproxy-"))
    try:
        config = _write_config(haproxy, config_dir, bind_address(host, port), ports)
        pool = Workers([Child(f"worker {i}", [sys.executable, str(APP), "--host", WORKER_HOST, "--port", str(p)],
                              env={**os.environ, "CMW_WORKER_ID": str(i), "CMW_WORKERS": str(workers)})
                        for i, p in enumerate(ports, 1)])
        proxy = Child("haproxy", [haproxy, "-f", str(config), "-db"])
        previous = {sig: signal.signal(sig, lambda signum, _frame: pool.stopping.append(signum))
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            status = _run(pool, proxy, host, port, settings)
            if pool.stopping:
                log.info("stopping: %s received", signal.Signals(pool.stopping[0]).name)
            return status
        finally:
            _stop([*pool.children, proxy])
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)


def _write_config(haproxy: str, folder: Path, bind: str, ports: list[int]) -> Path:
    """deploy/haproxy.cfg with this bind address and one server line per worker, checked by HAProxy."""
    config = folder / "haproxy.cfg"
    config.write_text(render_config(CONFIG.read_text(encoding="utf-8"), bind,
                                    [(f"w{i}", f"{WORKER_HOST}:{p}") for i, p in enumerate(ports, 1)]),
                      encoding="utf-8")
    check = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        output = (check.stdout + check.stderr).splitlines()
        errors = " ".join(line.strip() for line in output if "ALERT" in line) or " ".join(output)
        raise SystemExit(f"HAProxy refused its configuration (listening on {bind}): {errors}")
    return config


def find_haproxy() -> str | None:
    """HAProxy's path: on the PATH, or where Debian puts it (/usr/sbin is not on a normal user's PATH)."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


def _run(pool: Workers, proxy: Child, host: str, port: int, settings: Settings) -> int:
    for child in pool.children:
        child.start()
        log.info("%s started (pid %d, %s:%d)", child.name, child.process.pid, WORKER_HOST, _port(child))
    if not _wait_healthy(pool):
        return 0 if pool.stopping else 1
    proxy.start()
    log.info("serving on http://%s:%d through HAProxy (pid %d), %d workers", host, port, proxy.process.pid,
             len(pool.children))
    while not pool.stopping:
        status = proxy.exited()
        if status is not None:
            log.error("HAProxy exited (status %s): stopping the workers; its message is above", status)
            return 1
        for child in pool.children:
            _keep_running(child, settings)
        time.sleep(0.2)
    return 0


def _wait_healthy(pool: Workers) -> bool:
    """Wait until every worker answers /healthz; False if one exits first, the wait ends or a signal came."""
    deadline = time.monotonic() + START_TIMEOUT
    waiting = list(pool.children)
    while waiting and not pool.stopping:
        for child in list(waiting):
            status = child.exited()
            if status is not None:
                log.error("%s exited during start-up (status %s); its message is above", child.name, status)
                return False
            if healthy(WORKER_HOST, _port(child)):
                waiting.remove(child)
        if time.monotonic() > deadline:
            log.error("%s did not answer within %.0f s", ", ".join(c.name for c in waiting), START_TIMEOUT)
            return False
        time.sleep(0.2)
    return not pool.stopping


def _keep_running(child: Child, settings: Settings) -> None:
    """Restart a worker that exited: at once if it had run steadily, else after a pause that grows. First
    its leases are expired: the turns it was running are over, and their people go on elsewhere now."""
    status = child.exited()
    if status is None:
        return
    now = time.monotonic()
    if child.restart_at is None:
        released = _expire_leases(child, settings)
        ran = now - child.started
        child.quick_exits = child.quick_exits + 1 if ran < STEADY else 0
        pause = min(30.0, 2.0 ** child.quick_exits - 1)
        child.restart_at = now + pause
        log.warning("%s (pid %d) exited with status %s after %.0f s%s; restarting it on port %d%s", child.name,
                    child.process.pid, status, ran, released, _port(child), f" in {pause:.0f} s" if pause else "")
    if now >= child.restart_at:
        child.start()
        log.info("%s restarted (pid %d)", child.name, child.process.pid)


def _expire_leases(child: Child, settings: Settings) -> str:
    """Expire the leases of a worker that exited; a few words for the log saying what that released."""
    try:
        expired = expire_leases_of_process(child.process.pid, database_url=settings.database_url,
                                           sqlite_path=settings.data_dir / SQLITE_FILE)
    except Exception as error:  # the store is down: the leases expire by themselves (memory/leases.py)
        return f" (its conversations could not be released now: {error}; they are within {LEASE_TTL:.0f} s)"
    return f" ({expired} running conversation(s) released to the other workers)" if expired else ""


def _stop(children: list[Child]) -> None:
    """SIGTERM to every running child, then wait; SIGKILL whatever is left after STOP_TIMEOUT."""
    running = [c.process for c in children if c.process is not None and c.process.poll() is None]
    for process in running:
        _signal(process, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop within %.0f s: killing it", process.pid, STOP_TIMEOUT)
            _signal(process, signal.SIGKILL)
            process.wait()


def _signal(process: subprocess.Popen, signum: int) -> None:
    try:
        process.send_signal(signum)
    except ProcessLookupError:
        pass


def _port(child: Child) -> int:
    return int(child.argv[child.argv.index("--port") + 1])


def prepare_shared(settings: Settings) -> None:
    """What every worker shares, created here once: the data dir, the cookie key, SQLite's WAL mode."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    load_or_create_key(settings.data_dir, settings.secret_key)
    if settings.database_url:
        return
    log.warning("several workers share the SQLite file in %s: this works on ONE machine only; workers on "
                "several machines need PostgreSQL (DATABASE_URL)", settings.data_dir.resolve())
    conn = sqlite3.connect(settings.data_dir / SQLITE_FILE, timeout=10)  # the store's file (memory/store.py)
    try:
        conn.execute("PRAGMA journal_mode=WAL")  # persistent: workers opening the store at once find it set
    finally:
        conn.close()


def render_config(template: str, bind: str, servers: list[tuple[str, str]]) -> str:
    """``template`` with its ``bind`` line set to ``bind`` and its ``server`` lines replaced by ``servers``
    ((name, address:port) pairs) at the place of the first one; every other line as written."""
    out: list[str] = []
    binds = placed = 0
    for line in template.splitlines():
        words = line.split()
        indent = line[: len(line) - len(line.lstrip())]
        if words[:1] == ["bind"]:
            binds += 1
            out.append(f"{indent}bind {bind}")
        elif words[:1] == ["server"]:
            if not placed:
                out.extend(f"{indent}server {name} {address}" for name, address in servers)
            placed += 1
        else:
            out.append(line)
    if binds != 1 or not placed:
        raise ValueError(f"the HAProxy template needs one bind line and at least one server line "
                         f"(found {binds} and {placed})")
    return "\n".join(out) + "\n"


def bind_address(host: str, port: int) -> str:
    """host:port as HAProxy's ``bind`` reads it (an IPv6 address takes no brackets there)."""
    return f"{host.strip('[]')}:{port}"


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports nobody listens on right now."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((WORKER_HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def healthy(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether the worker on host:port answers ``GET /healthz`` with 200 (straight, never via a proxy)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _die_with_parent(parent: int):
    """For Popen's preexec_fn: the child gets SIGTERM when its parent dies (Linux), even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    pr_set_pdeathsig = 1

    def set_death_signal() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the call above: nobody would send it
            os._exit(1)

    return set_death_signal
