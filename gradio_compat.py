"""Every assumption this app makes about Gradio's internals, in one place, pinned to one version.

The HTTP guard must know which Gradio routes name a session_hash and where; tests and shutdown need the
server's event loop and the queue's bound. None of that is public API, so it lives here, and
``tests/test_gradio_compat.py`` checks each assumption against the installed Gradio: an upgrade that
changes one fails there first.
"""

from __future__ import annotations

import copy
import json
import os
from urllib.parse import parse_qs

GRADIO_VERSION = "6.31.0"  # the version these shapes were read from (requirements.txt pins it)

API_PREFIX = "/gradio_api/"
# POST routes whose JSON body may carry a session_hash or an event id
BODY_ROUTES = ("queue/join", "call/", "run/", "api/", "cancel", "component_server", "reset", "stream/")
# POST routes whose JSON answer carries the id of the event the request just created
EVENT_CREATING_ROUTES = ("queue/join", "call/")
# POST: files in (multipart), their cache paths out (a JSON list); later events name those paths as FileData
UPLOAD_ROUTE = "upload"
# GET/HEAD: a file served by path (``file=<path>``, the older ``file/<path>``)
FILE_ROUTES = ("file=", "file/")


def api_route(path: str) -> str | None:
    """The part after ``/gradio_api/`` (wherever the app is mounted), or None for other paths."""
    index = path.find(API_PREFIX)
    return path[index + len(API_PREFIX):] if index >= 0 else None


def named_sessions(scope, route: str, body: bytes) -> list[tuple[str, bool]]:
    """(session_hash, may_bind) pairs a request names. ``may_bind``: first use binds it to the caller."""
    named: list[tuple[str, bool]] = []
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    for value in query.get("session_hash", []):
        named.append((value, True))
    parts = route.split("/")
    if parts[0] == "heartbeat" and len(parts) > 1:
        named.append((parts[1], True))
    elif parts[0] == "stream" and len(parts) > 2 and scope["method"] == "GET":
        named.append((parts[1], True))
    if body:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("session_hash"), str):
            named.append((payload["session_hash"], True))
    return [(h, bind) for h, bind in named if h]


def _json(body: bytes):
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def named_events(scope, route: str, body: bytes) -> list[str]:
    """Event ids a request acts on: reading an event's results (``GET call/<api>/<id>``, also ``call/v2``),
    feeding or closing a stream (``POST stream/<id>[/close]``), ``cancel`` and ``reset`` bodies."""
    parts, method = route.rstrip("/").split("/"), scope["method"]
    events = []
    if parts[0] == "call" and method == "GET" and len(parts) >= 3:
        events.append(parts[-1])
    elif parts[0] == "stream" and method == "POST" and len(parts) >= 2:
        events.append(parts[1])
    elif parts[0] in ("cancel", "reset") and method == "POST":
        payload = _json(body)
        events.append(payload.get("event_id") if payload else None)
        events = [e if isinstance(e, str) and e else "" for e in events]
    return events


def created_event(route: str, method: str, response_body: bytes) -> str | None:
    """The event id in the answer to a request that creates one (``queue/join``, ``POST call/<api>``)."""
    if method != "POST" or not route.startswith(EVENT_CREATING_ROUTES):
        return None
    payload = _json(response_body)
    event_id = payload.get("event_id") if payload else None
    return event_id if isinstance(event_id, str) else None


def uploaded_paths(route: str, method: str, response_body: bytes) -> list[str]:
    """The cache paths in the answer to ``POST upload`` (a JSON list of strings), normalised."""
    if method != "POST" or route.rstrip("/") != UPLOAD_ROUTE:
        return []
    try:
        payload = json.loads(response_body)
    except ValueError:
        return []
    return [normal_path(p) for p in payload if isinstance(p, str)] if isinstance(payload, list) else []


def file_paths_in(body: bytes) -> list[str]:
    """Every file path a request body hands to an event: FileData dicts (``{"path": ..., "meta": {"_type":
    "gradio.FileData"}}``) anywhere in its JSON, normalised. Any dict with a string ``path`` counts."""
    found: list[str] = []

    def walk(value, depth: int = 0) -> None:
        if depth > 20:
            return
        if isinstance(value, dict):
            if isinstance(value.get("path"), str):
                found.append(normal_path(value["path"]))
            for item in value.values():
                walk(item, depth + 1)
        elif isinstance(value, list):
            for item in value:
                walk(item, depth + 1)

    if body:
        try:
            walk(json.loads(body))
        except ValueError:
            pass
    return found


def served_file(route: str) -> str | None:
    """The path a ``file=<path>`` (or ``file/<path>``) request asks for, normalised; None for other routes."""
    for prefix in FILE_ROUTES:
        if route.startswith(prefix) and len(route) > len(prefix):
            return normal_path(route[len(prefix):])
    return None


def upload_folder() -> str:
    """Where Gradio writes uploads (``GRADIO_TEMP_DIR``, else <tmp>/gradio), normalised."""
    from gradio.utils import get_upload_folder

    return normal_path(get_upload_folder())


def normal_path(path: str) -> str:
    """One spelling per file: absolute, ``..`` and symlinks resolved (the file need not exist)."""
    return os.path.realpath(os.path.abspath(path))


def forget_session_state(demo, session_hash: str) -> None:
    """Drop everything Gradio keeps for a session_hash (component values, ``gr.State``; delete callbacks run)."""
    holder = getattr(demo, "state_holder", None)
    if holder is None or session_hash not in holder:
        return
    holder.delete_state(session_hash)
    with holder.lock:
        holder.session_data.pop(session_hash, None)
        holder.time_last_used.pop(session_hash, None)


def holds_session_state(demo, session_hash: str) -> bool:
    holder = getattr(demo, "state_holder", None)
    return holder is not None and session_hash in holder


def server_loop(demo):
    """The event loop of the uvicorn server ``demo.launch()`` started, or None when it is not running."""
    servers = getattr(getattr(demo, "server", None), "servers", None) or []
    return servers[0].get_loop() if servers else None


def queue_max_size(demo) -> int | None:
    """The bound of waiting events ``demo.queue(max_size=...)`` set."""
    return demo._queue.max_size


class _ConfigOnDemand(dict):
    """``SessionState.config_values``, filled on first full read instead of at creation.

    Gradio builds every component's config (JSON schemas included) for every new session_hash, to answer a
    deep link later; with this page that was 13% of the app's CPU under load (bench/README.md). Entries
    Gradio writes or reads one by one work as before; the rest are built, from the session's own blocks,
    the first time someone reads them all (``SessionState.components``, deep links).
    """

    def __init__(self, blocks_config, ids) -> None:
        super().__init__()
        self._blocks_config = blocks_config
        self._ids = ids
        self._complete = False

    def _complete_it(self) -> None:
        if self._complete:
            return
        self._complete = True
        for key, block in list(self._blocks_config.blocks.items()):
            if key in self._ids and not dict.__contains__(self, key):
                dict.__setitem__(self, key, self._blocks_config.config_for_block(key, [], block))
        # Gradio's eager version holds the keys in the blocks' order; later writes keep their place
        ordered = {k: dict.__getitem__(self, k) for k in self._blocks_config.blocks if dict.__contains__(self, k)}
        ordered.update({k: v for k, v in dict.items(self) if k not in ordered})
        dict.clear(self)
        dict.update(self, ordered)

    def __missing__(self, key):
        block = self._blocks_config.blocks[key]
        value = self._blocks_config.config_for_block(key, [], block)
        dict.__setitem__(self, key, value)
        return value

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or (not self._complete and key in self._ids
                                                and key in self._blocks_config.blocks)

    def items(self):
        self._complete_it()
        return dict.items(self)

    def values(self):
        self._complete_it()
        return dict.values(self)

    def keys(self):
        self._complete_it()
        return dict.keys(self)

    def __iter__(self):
        self._complete_it()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._complete_it()
        return dict.__len__(self)


def build_session_config_on_demand() -> None:
    """Make Gradio build a new session's component configs only when they are read (see ``_ConfigOnDemand``).

    Same values as Gradio's own ``SessionState.__init__``; only when they are computed changes. Idempotent.
    """
    from gradio import state_holder

    original = state_holder.SessionState
    if getattr(original, "_cmw_config_on_demand", False):
        return

    class SessionStateConfigOnDemand(original):
        _cmw_config_on_demand = True

        def __init__(self, blocks) -> None:
            # Gradio's __init__ minus the eager dict; the rest is set exactly as there
            self.blocks_config = copy.copy(blocks.default_config)
            self.config_values = _ConfigOnDemand(self.blocks_config, frozenset(blocks.blocks))
            self.state_data = {}
            self._state_ttl = {}
            self.is_closed = False
            self.STATE_TTL_WHEN_CLOSED = 1 if os.getenv("GRADIO_IS_E2E_TEST", None) else 3600

    SessionStateConfigOnDemand.__name__ = original.__name__
    state_holder.SessionState = SessionStateConfigOnDemand
