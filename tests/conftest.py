"""Shared fixtures. Tests never reach the network and never touch a real model or the user's data."""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures.thread import _worker as _executor_worker
import time
import traceback
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from tests_support import free_port, with_search_path  # noqa: E402

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

_PROVIDER_KEYS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CMW_MODEL", "DATABASE_URL")
LINGER_SECONDS = 15.0
_EXIT_STATUS = pytest.StashKey[int]()


@pytest.fixture(autouse=True)
def _offline_and_isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No provider keys, every store under tmp_path: a real model call or a shared file cannot happen."""
    for key in _PROVIDER_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CMW_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable:
    """Settings for a test app: offline model, fast tokens, data under tmp_path, no rate limits (the
    tests that check limits switch them on); override any field."""
    from settings import Settings

    def make(**changes):
        base = Settings.from_env({"CMW_OFFLINE_TOKEN_DELAY": "0.002", "CMW_DATA_DIR": str(tmp_path / "data")})
        return base.replace(**{"rate_limit_per_owner": 0, "rate_limit_per_ip": 0, **changes})

    return make


@pytest.fixture
def launch_app(make_settings) -> Iterator[Callable]:
    """Factory: build the real app, launch it in-process on a free port, return (app, base_url).
    Every app it built is closed after the test, pass or fail, even when closing another one raises."""
    from app_ng import build_app

    with ExitStack() as closing:
        def launch(**setting_changes):
            app = build_app(make_settings(**setting_changes))
            closing.callback(app.close)  # before launch: an app that fails to start is closed too
            port = free_port()
            app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
            return app, f"http://127.0.0.1:{port}/"

        yield launch


@pytest.fixture
def clients() -> Iterator[list]:
    """The test's gradio_client Clients, alive until it ends, then closed (at once: each close waits up to
    1 s)."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client

    made: list[Client] = []
    yield made
    if made:
        with ThreadPoolExecutor(len(made)) as pool:
            list(pool.map(Client.close, made))


@pytest.fixture
def make_server(monkeypatch) -> Iterator[Callable]:
    """Factory: ``make_server(**options)`` starts a fake OpenAI-compatible server on loopback (tests/fake_openai.py;
    its options pick the faults); every one started is stopped after the test."""
    from fake_openai import FakeOpenAIServer

    servers = []
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")

    def make(**options) -> FakeOpenAIServer:
        servers.append(FakeOpenAIServer(**options).start())
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL (from TEST_DATABASE_URL) whose connections see only a fresh schema of this
    test's own, dropped afterwards: no test sees another's rows. Skips when TEST_DATABASE_URL is unset."""
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        pytest.skip("PostgreSQL tests need TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/test); "
                    ".ci/run sets it")
    import psycopg

    schema = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(base, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_search_path(base, schema)
    finally:
        with psycopg.connect(base, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SET lock_timeout = '10s'")  # a connection left open cannot hang the teardown
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """The run cannot hang on its way out: a thread that would keep the process alive (an unclosed
    store's worker, a stuck client) gets a few seconds to end, then is named with its stack and the
    process exits with a failure status."""
    deadline = time.monotonic() + LINGER_SECONDS
    for thread in _lingering():
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = _lingering()
    if not stuck:
        return
    frames = sys._current_frames()
    report = [f"\n{len(stuck)} non-daemon thread(s) still running {LINGER_SECONDS:.0f} s after the tests "
              "(something was not closed); exiting instead of hanging:\n"]
    for thread in stuck:
        report.append(f"--- {thread.name}\n" + "".join(traceback.format_stack(frames.get(thread.ident))))
    sys.stderr.write("".join(report))
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(config.stash.get(_EXIT_STATUS, 0) or 1)


def _lingering() -> list[threading.Thread]:
    """Threads that would keep the process alive. An idle ``concurrent.futures`` worker (an event loop's
    default executor, say) is not one: the interpreter's exit hook wakes and joins it."""
    return [t for t in threading.enumerate()
            if t is not threading.current_thread() and not t.daemon and t.is_alive()
            and getattr(t, "_target", None) is not _executor_worker]
