"""Helpers shared by test modules (importable; fixtures live in conftest.py)."""

from __future__ import annotations

import socket
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent

# Where each backend's checkpointer keeps a conversation's rows (besides the cmw_conversations table).
CHECKPOINT_TABLES = {"sqlite": ("writes", "checkpoints"),
                     "postgres": ("checkpoint_writes", "checkpoints", "checkpoint_blobs")}


def wait_until(condition: Callable[[], object], message: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` (every 10 ms) until it is true; fail with ``message`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{message} (waited {timeout:.0f} s)"
        time.sleep(0.01)


def with_search_path(url: str, schema: str) -> str:
    """``url`` with libpq ``options`` that make every connection see ``schema`` only."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["options"] = f"{query.get('options', '')} -csearch_path={schema}".strip()
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def count_rows(store, conversation_ids: list[str]) -> dict[str, int]:
    """Rows stored for these conversations, per table, read straight from the store's database (how
    tests prove deletion); opens and closes its own connection."""
    backend = "postgres" if store.database_url else "sqlite"
    tables = (*CHECKPOINT_TABLES[backend], "cmw_conversations")
    marks = ", ".join(["%s" if store.database_url else "?"] * len(conversation_ids)) or "NULL"
    column = {"cmw_conversations": "id"}
    queries = {t: f"SELECT count(*) FROM {t} WHERE {column.get(t, 'thread_id')} IN ({marks})" for t in tables}
    if store.database_url:
        import psycopg

        with psycopg.connect(store.database_url, connect_timeout=10) as conn:
            return {t: conn.execute(q, conversation_ids).fetchone()[0] for t, q in queries.items()}
    with closing(sqlite3.connect(store.path, timeout=10)) as conn:
        return {t: conn.execute(q, conversation_ids).fetchone()[0] for t, q in queries.items()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def handler_request(session_hash: str | None, owner: str | None, *, username: str | None = None,
                    tab_only: bool = False, client_host: str | None = None):
    """A stand-in for ``gr.Request`` as a handler sees it after the HTTP guard resolved the caller."""
    from types import SimpleNamespace

    from security.caller import Caller

    state = SimpleNamespace(cmw_caller=Caller(owner, tab_only=tab_only))
    client = SimpleNamespace(host=client_host) if client_host else None
    return SimpleNamespace(session_hash=session_hash, headers={}, client=client, username=username,
                           request=SimpleNamespace(state=state, client=client))
