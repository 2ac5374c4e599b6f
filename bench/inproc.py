"""In-process helpers: build the app with ``app_ng.build_app`` (no server) and drive the same code a
request runs, through the objects the app itself exposes.

* the ``/chat`` handler is found in the Blocks by its api_name (the function Gradio would call);
* a request is a minimal stand-in with what handlers read: ``session_hash``, the owner cookie, client;
* the session path goes through ``ui.edge.SessionEdge`` when the app has it (owner check, store
  rehydration), else straight through ``registry.get_or_create``.

These follow the app's current structure; if it changes, adapt here (the HTTP benchmarks do not depend
on any of this).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from common import ROOT  # noqa: F401  (puts the project on sys.path)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def settings_env(data_dir: str | Path | None = None, **extra: Any) -> dict[str, str]:
    env = {"CMW_DATA_DIR": str(data_dir or tempfile.mkdtemp(prefix="cmw-bench-inproc-")), "CMW_MODEL": "offline",
           "CMW_OFFLINE_TOKEN_DELAY": "0", "CMW_RATE_LIMIT_PER_MINUTE": "0", "CMW_IP_RATE_LIMIT_PER_MINUTE": "0"}
    if os.environ.get("DATABASE_URL") and extra.pop("use_database_url", False):
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    env.update({k: str(v) for k, v in extra.items()})
    return env


def build(env: dict[str, str]):
    from app_ng import build_app
    from settings import Settings

    return build_app(Settings.from_env(env))


def cookie_name() -> str:
    try:
        from security.cookie_mode import COOKIE_NAME

        return COOKIE_NAME
    except ImportError:
        return "cmw_owner"


class Driver:
    """Requests against one in-process app, as a given owner (cookie token)."""

    def __init__(self, app):
        self.app = app
        self.chat = endpoint_fn(app.demo, "chat")
        credentials = getattr(app, "credentials", None)
        self.credentials = credentials
        self.edge = None
        try:
            from ui.edge import SessionEdge

            if credentials is not None:
                self.edge = SessionEdge(app.registry, credentials)
        except ImportError:
            pass
        self.path = "SessionEdge.resolve + memory.load" if self.edge else "registry.get_or_create + memory.load"

    def new_owner(self) -> str | None:
        return self.credentials.mint() if self.credentials is not None else None

    def request(self, session_hash: str, token: str | None):
        cookies = {cookie_name(): token} if token else {}
        return SimpleNamespace(session_hash=session_hash, cookies=cookies, headers={}, username=None, request=None,
                               client=SimpleNamespace(host="127.0.0.1"), query_params={})

    async def turn(self, session_hash: str, token: str | None, message: str) -> str:
        """One /chat turn through the app's own handler; returns the final reply text."""
        reply = ""
        async for reply in self.chat(message, self.request(session_hash, token)):
            pass
        return reply

    async def session(self, session_hash: str, token: str | None):
        """What a request does before the model runs: resolve (get-or-create, owner check, rehydrate)."""
        if self.edge is not None:
            return await self.edge.resolve(self.request(session_hash, token))
        owner = self.credentials.owner_of(token) if self.credentials is not None and token else None
        return self.app.registry.get_or_create(session_hash, owner)

    async def graph(self, session):
        agent = session.agent
        runtime = getattr(agent, "runtime", None)
        if runtime is not None:
            return await runtime.graph()
        return agent.graph

    async def close(self) -> None:
        store = getattr(getattr(self.app, "manager", None), "store", None)
        if store is not None and hasattr(store, "close"):
            await store.close()
        try:
            self.app.close()
        except Exception:
            pass


def endpoint_fn(demo, api_name: str):
    fns = demo.fns.values() if isinstance(demo.fns, dict) else demo.fns
    for block_fn in fns:
        if getattr(block_fn, "api_name", None) == api_name:
            return block_fn.fn
    raise RuntimeError(f"no endpoint with api_name={api_name!r}")
