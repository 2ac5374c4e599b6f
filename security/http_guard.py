"""ASGI middleware: the owner cookie, and session_hash binding at the HTTP layer.

Gradio trusts whatever session_hash a client names, and some routes (``queue/data``, ``heartbeat``)
run no handler code at all. So every request is checked here, before Gradio sees it:

* a client without a valid owner cookie gets a new one (on any response, the page included), and the
  request continues as that new owner;
* every Gradio route that names a session_hash - ``queue/join``, ``call/*``, ``run/*``, ``cancel`` and
  ``component_server`` bodies, the ``queue/data`` query, ``heartbeat/<hash>``, ``stream/<hash>/...``,
  the event id of ``call/<api>/<event_id>`` - must name a hash bound to this owner (a hash is bound at
  first use; the binding lives on the session in the registry). Anyone else gets 403;
* ``deep_link`` (exports a session's UI state) is not served at all.
"""

from __future__ import annotations

import json
import logging
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from memory.registry import SessionRegistry
from security.owner import COOKIE_NAME, OwnerCredentials

log = logging.getLogger("cmw.http_guard")

MAX_BODY_BYTES = 1_000_000
_BODY_ROUTES = ("queue/join", "call/", "run/", "api/", "cancel", "component_server")
FORBIDDEN = b'{"detail": "This session belongs to someone else. Reload the page to start your own."}'


def _api_route(path: str) -> str | None:
    """The part after ``/gradio_api/`` (wherever the app is mounted), or None for other paths."""
    marker = "/gradio_api/"
    index = path.find(marker)
    return path[index + len(marker):] if index >= 0 else None


def _token_from(scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            cookie = SimpleCookie()
            try:
                cookie.load(value.decode("latin-1"))
            except Exception:
                continue
            if COOKIE_NAME in cookie:
                return cookie[COOKIE_NAME].value
    return None


def _with_cookie(scope, token: str):
    """The scope with its Cookie header carrying ``token`` as the owner cookie (others kept)."""
    kept = []
    for name, value in scope.get("headers", []):
        if name != b"cookie":
            kept.append((name, value))
            continue
        parts = [p for p in value.decode("latin-1").split(";") if p.strip() and
                 p.strip().split("=", 1)[0] != COOKIE_NAME]
        if parts:
            kept.append((b"cookie", ";".join(parts).encode("latin-1")))
    kept.append((b"cookie", f"{COOKIE_NAME}={token}".encode("latin-1")))
    return {**scope, "headers": kept}


async def _respond(send, status: int, body: bytes, set_cookie: str | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if set_cookie:
        headers.append((b"set-cookie", set_cookie.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class OwnerGuard:
    def __init__(self, app, *, credentials: OwnerCredentials, registry: SessionRegistry):
        self.app = app
        self.credentials = credentials
        self.registry = registry

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        token = _token_from(scope)
        owner = self.credentials.owner_of(token)
        set_cookie = None
        if owner is None:
            token = self.credentials.mint()
            owner = self.credentials.owner_of(token)
            scope = _with_cookie(scope, token)
            set_cookie = self.credentials.set_cookie_header(token)

        route = _api_route(scope["path"])
        if route is not None:
            if route.startswith("deep_link"):
                return await _respond(send, 404, b'{"detail": "Not Found"}', set_cookie)
            body = b""
            if scope["method"] == "POST" and route.startswith(_BODY_ROUTES):
                body, too_large = await _read_body(receive)
                if too_large:
                    return await _respond(send, 413, b'{"detail": "Request too large."}', set_cookie)
                receive = _replay(body)
            for session_hash, may_bind in _named_sessions(scope, route, body):
                if not self._allowed(session_hash, owner, may_bind):
                    log.warning("refused %s for session %s: not its owner", route.split("/")[0],
                                self.credentials.fingerprint(session_hash))
                    return await _respond(send, 403, FORBIDDEN, set_cookie)

        if set_cookie is None:
            return await self.app(scope, receive, send)

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"set-cookie", set_cookie.encode("latin-1"))]}
            await send(message)

        return await self.app(scope, receive, send_with_cookie)

    def _allowed(self, session_hash: str, owner: str, may_bind: bool) -> bool:
        if may_bind:
            return self.registry.bind(session_hash, owner)
        session = self.registry.peek(session_hash)
        return session is None or session.owner == owner


async def _read_body(receive) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks), False


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def _named_sessions(scope, route: str, body: bytes) -> list[tuple[str, bool]]:
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
