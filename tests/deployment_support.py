"""A real ``python app_ng.py --workers N`` deployment (supervisor, workers, HAProxy) for tests.

Used by tests/test_workers.py and tests/e2e/test_failover.py. Every process it started is ended by PID
when the block exits, whatever happened; every wait has a limit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import psutil
import pytest

from deploy import supervisor

ROOT = Path(__file__).resolve().parent.parent
HAPROXY = supervisor.find_haproxy()
IN_CI = os.environ.get("CI", "").lower() == "true"
START_TIMEOUT = 90.0  # seconds for the supervisor, both workers and HAProxy to answer


def require_haproxy() -> str:
    """HAProxy's path; a skip with the reason where it is missing, a failure in CI."""
    if HAPROXY is None:
        if IN_CI:
            pytest.fail("haproxy not found; CI must install it (apt-get install haproxy, see .ci/run)")
        pytest.skip("haproxy is not installed (apt-get install haproxy): --workers runs workers behind it")
    return HAPROXY


def gone(process: psutil.Process) -> bool:
    """Ended (a zombie waiting for whoever adopted it to reap it has ended too)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --- a real deployment ----------------------------------------------------------------------------

@dataclass
class Deployment:
    process: subprocess.Popen
    url: str
    log: Path
    seen: dict[int, psutil.Process] = field(default_factory=dict)  # every child PID observed

    def workers(self) -> dict[str, psutil.Process]:
        """The live workers by CMW_WORKER_ID (and every child is remembered for the final check)."""
        found = {}
        for child in psutil.Process(self.process.pid).children():
            self.seen.setdefault(child.pid, child)
            try:
                worker_id = child.environ().get("CMW_WORKER_ID")
            except psutil.Error:
                continue
            if worker_id and child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                found[worker_id] = child
        return found

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def worker_of(url: str, cookies: dict[str, str] | None = None) -> str:
    response = httpx.get(url + "healthz", cookies=cookies, timeout=10)
    assert response.status_code == 200, response.text
    return response.headers["x-cmw-worker"]


def answers(url: str) -> bool:
    try:
        return httpx.get(url + "healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running_deployment(base: Path, workers: int = 2, **env_changes: str) -> Iterator[Deployment]:
    """``app_ng.py --workers N`` on a free port with its data under ``base``, offline model."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CMW_MODEL", "DATABASE_URL", "CMW_SECRET_KEY")}
    env.update(CMW_DATA_DIR=str(base / "data"), CMW_OFFLINE_TOKEN_DELAY="0.002", GRADIO_ANALYTICS_ENABLED="False",
               CMW_RATE_LIMIT_PER_MINUTE="0", CMW_IP_RATE_LIMIT_PER_MINUTE="0", CMW_LOG_LEVEL="WARNING",
               NO_PROXY="127.0.0.1,localhost")
    env.update(env_changes)
    port = _free_port()
    log = base / "supervisor.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, str(ROOT / "app_ng.py"), "--workers", str(workers), "--port", str(port)],
                                   cwd=base, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=supervisor._die_with_parent(os.getpid()))
    running = Deployment(process, f"http://127.0.0.1:{port}/", log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(running.url):
            assert process.poll() is None, f"the supervisor exited ({process.returncode}):\n{running.tail()}"
            assert time.monotonic() < deadline, f"no answer within {START_TIMEOUT:.0f} s:\n{running.tail()}"
            time.sleep(0.2)
        assert set(running.workers()) == {str(i) for i in range(1, workers + 1)}
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for child in running.seen.values():  # by PID, and only the very process we saw (create time checked)
            if not gone(child):
                child.kill()



def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
