"""Shared fixtures. Tests never reach the network and never touch a real model or the user's data."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from tests_support import free_port  # noqa: E402

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

_PROVIDER_KEYS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CMW_MODEL", "DATABASE_URL")


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
    """Factory: build the real app, launch it in-process on a free port, return (app, base_url)."""
    from app_ng import build_app

    launched = []

    def launch(**setting_changes):
        app = build_app(make_settings(**setting_changes))
        port = free_port()
        app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        launched.append(app)
        return app, f"http://127.0.0.1:{port}/"

    yield launch
    for app in launched:
        app.close()
