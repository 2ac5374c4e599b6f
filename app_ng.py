"""CMW Agent: a multi-user Gradio + LangChain chat app where sessions cannot leak into each other.

    python app_ng.py [--host 0.0.0.0] [--port 7860] [--share] [--workers N]

``--workers N`` (N > 1) serves N processes of this app behind HAProxy on --host/--port
(deploy/supervisor.py).

Settings come from environment variables, or from a ``.env`` file in the current directory (copy
.env.example); a variable set in the environment wins over the file.

Nothing launches on import: :func:`build_app` builds the app, :func:`main` serves it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
from dotenv import load_dotenv

from agent.catalog import load_catalog
from agent.cmw_agent import AgentRuntime
from agent.models import build_chat_model
from deploy.health import HealthCheck
from starlette.middleware import Middleware

from mcp_server.carts import McpCarts
from mcp_server.http import McpEndpoint
from mcp_server.keys import session_fingerprints
from mcp_server.service import McpService
from mcp_server.tokens import AssistantTokens
from memory.conversation_memory import ConversationMemoryManager
from memory.leases import Leases
from memory.registry import SessionRegistry
from memory.retention import RetentionSweeper
from memory.session import make_session_factory
from memory.store import ConversationStore
from security.http_guard import OwnerGuard
from security.owner import OwnerCredentials, load_or_create_key
from gradio_compat import build_session_config_on_demand, forget_session_state, server_loop
from settings import Settings
from ui.chat_handler import ChatHandlers
from ui.conversations import ConversationHandlers
from ui.edge import SessionEdge
from ui.assistant import AssistantHandlers
from ui.privacy import PrivacyHandlers
from ui.uploads import UploadHandlers
from ui.layout import PAGE_CSS, PAGE_HEAD, build_ui

log = logging.getLogger("cmw")


@dataclass
class App:
    """The built app: the Gradio Blocks plus the shared services behind it."""

    demo: gr.Blocks
    registry: SessionRegistry
    credentials: OwnerCredentials
    manager: ConversationMemoryManager
    retention: RetentionSweeper
    settings: Settings
    model_label: str
    mcp: McpService | None = None
    _stop_sweeper: threading.Event = field(default_factory=threading.Event)

    def launch(self, **overrides) -> None:
        settings = self.settings
        guard = Middleware(OwnerGuard, credentials=self.credentials, registry=self.registry,
                           allowed_origins=settings.allowed_origins, same_site=settings.cookie_same_site,
                           new_sessions_per_address=settings.new_sessions_per_ip,
                           new_sessions_per_owner=settings.new_sessions_per_owner, monitoring=settings.monitoring,
                           redis_url=settings.redis_url)
        # Gradio's per-hash state lives exactly as long as the hash's binding (memory/bindings.py).
        self.registry.forget_state = lambda session_hash: forget_session_state(self.demo, session_hash)
        # /healthz is answered outside the guard (no cookie, no session); the guard runs before the rest,
        # so /mcp gets its cross-site checks too.
        health = Middleware(HealthCheck, worker_id=settings.worker_id)
        middleware = [health, guard] + ([Middleware(McpEndpoint, service=self.mcp)] if self.mcp else [])
        options = dict(max_threads=settings.max_threads, show_error=False, run_history=False, css=PAGE_CSS, head=PAGE_HEAD,
                       footer_links=["api", "gradio"], app_kwargs={"middleware": middleware},
                       state_session_capacity=self.registry.bindings.maxsize,
                       max_file_size=settings.max_upload_bytes)  # larger uploads: 413 before any byte is kept
        options.update(overrides)
        self._start_session_sweeper()
        self.demo.launch(**options)

    def close(self) -> None:
        """Stop serving and close the store (on the app's own loop, where its connections live)."""
        self._stop_sweeper.set()
        loop = server_loop(self.demo)
        try:
            if self.mcp is not None:
                self.mcp.close()
            if loop is not None and loop.is_running():
                asyncio.run_coroutine_threadsafe(self.manager.store.close(), loop).result(timeout=10)
        except Exception:  # the store must not keep a failing test or a shutdown alive
            log.exception("closing the store failed")
        finally:
            self.demo.close()

    def _start_session_sweeper(self) -> None:
        """Release idle sessions even when no request arrives to trigger it (their data stays stored)."""
        interval = max(0.5, min(60.0, self.settings.session_ttl / 4))

        def sweep() -> None:
            while not self._stop_sweeper.wait(interval):
                expired = self.registry.expire()
                if expired:
                    log.info("released %d idle session(s)", expired)

        threading.Thread(target=sweep, name="cmw-session-sweeper", daemon=True).start()


def pii_middleware(settings: Settings) -> list:
    """Optional redaction of emails, card numbers and IPs before anything is stored or sent to the model."""
    if not settings.redact_pii:
        return []
    from langchain.agents.middleware import PIIMiddleware

    return [PIIMiddleware(kind, strategy="redact", apply_to_input=True, apply_to_output=True,
                          apply_to_tool_results=True) for kind in ("email", "credit_card", "ip")]


def _writable(folder: Path) -> None:
    """Exit with one sentence when ``folder`` (the server key's and SQLite's home) cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".cmw-write-check-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise SystemExit(f"The data directory {folder.resolve()} is not writable ({error.strerror or error}): set "
                         "CMW_DATA_DIR to a writable folder (on a Hugging Face Space, enable persistent storage "
                         "and use /data), or make this one writable.") from None


def check_storage(settings: Settings) -> None:
    """Before serving: the data directory can be written (server key, SQLite) and the store opens, so a
    broken setup stops here with one sentence naming the path and the fix, not on every click later."""
    if not settings.database_url or not settings.secret_key:
        _writable(settings.data_dir)
    if settings.database_url:
        import psycopg

        try:
            psycopg.connect(settings.database_url, connect_timeout=10).close()
        except psycopg.Error as error:
            raise SystemExit(f"The PostgreSQL database in DATABASE_URL cannot be opened ({' '.join(str(error).split())}): "
                             "check the URL and that the server is running, or unset DATABASE_URL to use "
                             f"SQLite in {settings.data_dir.resolve()}.") from None
        return
    path = settings.data_dir / "cmw.sqlite"
    try:
        conn = sqlite3.connect(path, timeout=10)
        try:
            conn.execute("BEGIN IMMEDIATE")  # takes the write lock: proves the file can be written
            conn.rollback()
        finally:
            conn.close()
    except sqlite3.Error as error:
        raise SystemExit(f"The database {path.resolve()} cannot be opened for writing ({error}): remove or "
                         "repair the file, or set CMW_DATA_DIR to another writable folder.") from None


def build_app(settings: Settings | None = None) -> App:
    settings = settings or Settings.from_env()
    check_storage(settings)
    # Gradio rebuilds a pandas summary of its last 10,000 events after *every* event (read only by
    # /monitoring); measured at 36% of the app's CPU after ~6,000 events (bench/README.md). Rebuild it
    # every 1,000 events instead, unless the operator chose otherwise. Read when the queue is created.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    # Gradio built every component's config for every new session (13% of CPU under load): on demand now.
    build_session_config_on_demand()
    choice = build_chat_model(settings)
    key = load_or_create_key(settings.data_dir, settings.secret_key)
    credentials = OwnerCredentials(key)
    store = ConversationStore(data_dir=settings.data_dir, database_url=settings.database_url)
    catalog = load_catalog()
    runtime = AgentRuntime(choice.model, catalog, store.checkpointer, middleware=pii_middleware(settings),
                           server=choice.server)
    manager = ConversationMemoryManager(runtime, store, leases=Leases.for_workers(store, settings.workers))
    registry = SessionRegistry(make_session_factory(manager), maxsize=settings.session_max,
                               ttl=settings.session_ttl, fingerprint=session_fingerprints(credentials))
    tokens = AssistantTokens(store, credentials, hours=settings.mcp_token_hours)
    mcp = (McpService(McpCarts(registry, manager, credentials, catalog), tokens, credentials, settings)
           if settings.mcp_enabled else None)
    retention = RetentionSweeper(manager, days=settings.retention_days, interval=settings.retention_sweep_seconds)
    edge = SessionEdge(registry, credentials, on_first_request=retention.start)
    demo = build_ui(ChatHandlers(edge, manager, settings), ConversationHandlers(edge, manager),
                    PrivacyHandlers(edge, manager, settings, tokens), UploadHandlers(edge, manager, settings), settings, choice.label, choice.how_to_switch,
                    assistant=AssistantHandlers(edge, manager, tokens) if mcp else None)
    demo.queue(api_open=False, max_size=settings.gradio_event_limit,
               default_concurrency_limit=settings.gradio_event_limit)
    return App(demo, registry, credentials, manager, retention, settings, choice.label, mcp)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the CMW Agent chat app.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to bind (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    parser.add_argument("--workers", type=int, default=1,
                        help="app processes behind HAProxy on --host/--port (default 1: this process serves)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be 1 or more")
    if args.workers > 1 and args.share:
        parser.error("--share works with one worker only; put the HAProxy port behind your own tunnel instead")
    return args


def main(argv: list[str] | None = None) -> None:
    # Settings from ./.env (see .env.example), under whatever the environment already sets.
    load_dotenv(Path.cwd() / ".env", override=False)
    worker = os.environ.get("CMW_WORKER_ID", "").strip().replace("%", "%%")  # under --workers: whose line
    logging.basicConfig(level=os.environ.get("CMW_LOG_LEVEL", "INFO"),
                        format="%(asctime)s " + (f"w{worker} " if worker else "") + "%(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpcore"):  # one INFO line per HTTP request (model calls, Gradio's own checks)
        logging.getLogger(chatty).setLevel(logging.WARNING)
    args = parse_args(argv)
    if args.workers > 1:
        from deploy.supervisor import supervise

        settings = Settings.from_env()
        check_storage(settings)
        raise SystemExit(supervise(settings, host=args.host, port=args.port, workers=args.workers))
    app = build_app()
    log.info("model: %s", app.model_label)
    # quiet: Gradio's own banner ends with "set `share=True` in `launch()`", which is wrong for this app.
    app.launch(server_name=args.host, server_port=args.port, share=args.share, quiet=True,
               prevent_thread_lock=True)
    log.info("serving on %s%s", app.demo.local_url,
             f" and {app.demo.share_url}" if app.demo.share_url else " (python app_ng.py --share adds a public link)")
    try:
        app.demo.block_thread()
    finally:
        app.close()


if __name__ == "__main__":
    main()
