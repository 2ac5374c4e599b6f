"""Every assumption this app makes about Gradio's internals, in one place, pinned to one version.

The HTTP guard must know which Gradio routes name a session_hash and where; tests and shutdown need the
server's event loop and the queue's bound. None of that is public API, so it lives here, and
``tests/test_gradio_compat.py`` checks each assumption against the installed Gradio: an upgrade that
changes one fails there first.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

GRADIO_VERSION = "6.31.0"  # the version these shapes were read from (requirements.txt pins it)

API_PREFIX = "/gradio_api/"
# POST routes whose JSON body may carry a session_hash
BODY_ROUTES = ("queue/join", "call/", "run/", "api/", "cancel", "component_server")


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
    elif parts[0] == "call" and len(parts) >= 3 and scope["method"] == "GET":
        named.append((parts[-1], False))  # Gradio falls back to reading the queue of a hash named like this
    if body:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("session_hash"), str):
            named.append((payload["session_hash"], True))
    return [(h, bind) for h, bind in named if h]


def server_loop(demo):
    """The event loop of the uvicorn server ``demo.launch()`` started, or None when it is not running."""
    servers = getattr(getattr(demo, "server", None), "servers", None) or []
    return servers[0].get_loop() if servers else None


def queue_max_size(demo) -> int | None:
    """The bound of waiting events ``demo.queue(max_size=...)`` set."""
    return demo._queue.max_size
