"""ASGI middleware: who is calling, cross-site refusals, and session_hash binding at the HTTP layer.

Gradio trusts whatever session_hash a client names, and some routes (``queue/data``, ``heartbeat``)
run no handler code at all. So every request is checked here, before Gradio sees it:

* **cross-site**: a request to ``/gradio_api/...`` (or any non-GET request) from another site - a
  browser's ``Sec-Fetch-Site: cross-site|same-site``, or an ``Origin`` that is not this app's own - is
  refused, unless that origin is listed in ``CMW_ALLOWED_ORIGINS``. The app's own frame makes
  same-origin requests; gradio_client sends neither header;
* **the owner cookie** (partitioned or first-party, see :mod:`security.cookie_mode`) is parsed in linear
  time from a bounded header; two of them in one request are refused, not silently resolved;
* **who is calling** becomes a :class:`~security.caller.Caller` in the scope's state: the cookie's
  owner; or, for a browser request that names a session but carries no cookie (cookies blocked), a
  tab-only owner derived from that session_hash. A new cookie is minted only on a document navigation
  (or a non-browser client's request that names no session), never on a cross-site subrequest, and a
  valid cookie is never replaced;
* every Gradio route that names a session_hash - ``queue/join``, ``call/*``, ``run/*``, ``cancel`` and
  ``component_server`` bodies, the ``queue/data`` query, ``heartbeat/<hash>``, ``stream/<hash>/...``,
  the event id of ``call/<api>/<event_id>`` - must name a hash bound to this caller (a hash is bound at
  first use; the binding lives on the session in the registry). Anyone else gets 403;
* ``deep_link`` (exports a session's UI state) is not served at all.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.datastructures import Headers

from gradio_compat import (BODY_ROUTES, EVENT_CREATING_ROUTES, UPLOAD_ROUTE, api_route, created_event,
                           file_paths_in, named_events, named_sessions, served_file, uploaded_paths)
from memory.bindings import Bound
from memory.registry import SessionRegistry
from security.asgi_body import read_body, replay
from security.caller import SCOPE_KEY, Caller
from security.cookie_mode import cookie_mode
from security.cookies import CookieHeaderTooLarge, cookie_pairs
from security.owner import OwnerCredentials
from security.rate_limit import RateLimiter

log = logging.getLogger("cmw.http_guard")

MAX_BODY_BYTES = 64_000  # a chat message is at most CMW_MAX_MESSAGE_CHARS; nothing else here is large
NOT_FOUND = b'{"detail": "Not Found"}'
UPLOAD_NEEDS_COOKIE = (b'{"detail": "Uploading needs this site\'s owner cookie. Allow cookies for this site (or open '
                       b'the app in its own tab) and reload; API callers: keep the cookie of your first request."}')
NOT_YOUR_FILE = (b'{"detail": "That file was not uploaded by you. Upload it again from this page (or this client)."}')
TOO_MANY_SESSIONS = b'{"detail": "Too many new sessions from your address. Please wait %d seconds and try again."}'
SESSIONS_FULL = (b'{"detail": "The app is serving as many sessions as it can right now. Please try again in a '
                 b'few minutes."}')
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
FORBIDDEN = (b'{"detail": "This session belongs to someone else. Reload the page to start your own. API callers: '
             b'keep the owner cookie the server sets on your first request and send it back (gradio_client does; '
             b'with curl use -c jar -b jar)."}')
INVALID_COOKIE = (b'{"detail": "Your owner cookie is not valid on this server (set by another deployment, or '
                  b'changed). Delete this site\'s cookies and reload; API callers: start a new client without '
                  b'it, and the server sets a new one."}')
CROSS_SITE = (b'{"detail": "Requests from other websites are not accepted. Open the app itself, or ask its '
              b'operator to add your site to CMW_ALLOWED_ORIGINS."}')
DUPLICATE_COOKIES = (b'{"detail": "Your browser sent two owner cookies for this site (another site on the same '
                     b'domain may have set one). Clear this site\'s cookies and reload the page."}')
COOKIES_TOO_LARGE = (b'{"detail": "Your browser sent too many or too large cookies for this site. Clear this '
                     b'site\'s cookies and reload the page."}')


async def _respond(send, status: int, body: bytes, set_cookie: str | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if set_cookie:
        headers.append((b"set-cookie", set_cookie.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def is_cross_site(headers: Headers, allowed_origins: frozenset[str]) -> bool:
    """Whether a browser sent this request from another site (or a sibling subdomain)."""
    origin = headers.get("origin")
    if origin is not None and origin in allowed_origins:
        return False
    if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return True
    if origin is None:
        return False
    own = {headers.get("host", "").lower(), headers.get("x-forwarded-host", "").split(",")[0].strip().lower()}
    return urlsplit(origin).netloc.lower() not in own - {""}


def may_mint(scope, headers: Headers, names_session: bool, partitioned: bool) -> bool:
    """Whether this request may be given a new owner cookie (it carried no valid one).

    Browsers: only a GET document navigation - it carries every cookie that could come back (a partitioned
    cookie in a frame, a Lax one top-level), so "no cookie" there means none. A framed navigation gets a
    first-party cookie never (it could overwrite the top-level one in browsers that still allow it).
    Non-browser clients (no ``Sec-Fetch-Site``): any request that names no session."""
    site = headers.get("sec-fetch-site")
    if site is None:
        return not names_session
    if scope["method"] != "GET" or headers.get("sec-fetch-mode") != "navigate":
        return False
    return site in ("same-origin", "none") or partitioned or headers.get("sec-fetch-dest") == "document"


class OwnerGuard:
    def __init__(self, app, *, credentials: OwnerCredentials, registry: SessionRegistry,
                 allowed_origins: frozenset[str] = frozenset(), same_site: str = "lax",
                 new_sessions_per_address: int = 0, new_sessions_per_owner: int = 0, monitoring: bool = False,
                 redis_url: str | None = None):
        self.app = app
        self.credentials = credentials
        self.registry = registry
        self.allowed_origins = frozenset(allowed_origins)
        self.same_site = same_site
        self.monitoring = monitoring
        self._new_per_address = RateLimiter(new_sessions_per_address, redis_url=redis_url,
                                            name="new-session-address")
        self._new_per_owner = RateLimiter(new_sessions_per_owner, redis_url=redis_url, name="new-session-owner")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        route = api_route(scope["path"])
        closed = self._closed_door(scope, headers, route)
        if closed is not None:
            return await _respond(send, *closed)
        mode = cookie_mode(scope)
        try:
            tokens = [value for name, value in cookie_pairs(scope.get("headers", [])) if name == mode.name]
        except CookieHeaderTooLarge:
            return await _respond(send, 431, COOKIES_TOO_LARGE)
        if len(tokens) > 1:
            log.warning("refused a request with %d owner cookies", len(tokens))
            return await _respond(send, 400, DUPLICATE_COOKIES)
        owner = self.credentials.owner_of(tokens[0]) if tokens else None

        body, named, events, files = b"", [], [], []
        if route is not None:
            if scope["method"] == "POST" and route.startswith(BODY_ROUTES):
                body = await read_body(receive, MAX_BODY_BYTES)
                if body is None:
                    return await _respond(send, 413, b'{"detail": "Request too large."}')
                receive = replay(body, receive)
            named, events = named_sessions(scope, route, body), named_events(scope, route, body)
            files = file_paths_in(body)

        set_cookie = None
        if owner is None and may_mint(scope, headers, bool(named), mode.partitioned):
            token = self.credentials.mint()
            owner = self.credentials.owner_of(token)
            set_cookie = mode.set_cookie_header(token, self.same_site)
        caller = Caller(owner)
        if owner is None and named and not tokens and "sec-fetch-site" in headers:
            # A browser that keeps no cookie at all: the tab's own session, ending with the tab.
            caller = Caller(self.credentials.tab_owner(named[0][0]), tab_only=True)
        refusal = await self._refusal(scope, route, caller, named, events, files) if route is not None else None
        if refusal is not None and caller.owner is None and tokens:
            refusal = 403, INVALID_COOKIE
        if refusal is not None:
            return await _respond(send, *refusal, set_cookie)
        scope = {**scope, "state": {**scope.get("state", {}), SCOPE_KEY: caller}}
        send = self._wrap_send(send, set_cookie, route, scope["method"], caller.owner)
        if named and (route == "queue/data" or route.startswith("heartbeat/")):
            # An open stream, or an open tab (its heartbeat), keeps the hash's binding alive.
            self.registry.bindings.stream_opened(named[0][0])
            try:
                return await self.app(scope, receive, send)
            finally:
                self.registry.bindings.stream_closed(named[0][0])
        return await self.app(scope, receive, send)

    def _closed_door(self, scope, headers: Headers, route: str | None) -> tuple[int, bytes] | None:
        """Requests refused whoever sends them: cross-site, closed Gradio features."""
        if (route is not None or scope["method"] not in _SAFE_METHODS) and is_cross_site(headers, self.allowed_origins):
            log.warning("refused a cross-site %s request (Sec-Fetch-Site=%s)", scope["method"],
                        printable(headers.get("sec-fetch-site", "")))
            return 403, CROSS_SITE
        if route is not None and route.startswith("deep_link"):
            return 404, NOT_FOUND
        if route is not None and scope["method"] in _SAFE_METHODS and (path := served_file(route)) is not None \
                and self.registry.uploads.owner_of(path) is not None:
            return 404, NOT_FOUND  # an upload is never served back, to anyone: it lives in the store
        if scope["path"].startswith("/monitoring") and not self.monitoring:
            return 404, NOT_FOUND
        return None

    async def _refusal(self, scope, route, caller: Caller, named, events, files) -> tuple[int, bytes] | None:
        """Why this caller may not act on the sessions, events and uploaded files it names, or None."""
        if route.rstrip("/") == UPLOAD_ROUTE and scope["method"] == "POST" and (caller.owner is None
                                                                              or caller.tab_only):
            return 403, UPLOAD_NEEDS_COOKIE
        for path in files:
            if caller.owner is None or self.registry.uploads.owner_of(path) != caller.owner:
                log.warning("refused %s naming a file the caller did not upload", printable(route.split("/")[0]))
                return 403, NOT_YOUR_FILE
        for event_id in events:
            if caller.owner is None or self.registry.events.owner_of(event_id) != caller.owner:
                log.warning("refused %s for an event that is not the caller's", printable(route.split("/")[0]))
                return 403, FORBIDDEN
        for session_hash, may_bind in named:
            bound_to = self.registry.bindings.owner_of(session_hash)
            if caller.owner is None or (bound_to is not None and bound_to != caller.owner):
                log.warning("refused %s for session %s: not its owner", printable(route.split("/")[0]),
                            self.credentials.fingerprint(session_hash))
                return 403, FORBIDDEN
            if bound_to is None:
                if not may_bind:
                    return 403, FORBIDDEN
                wait = (await self._new_per_address.wait_seconds(self.credentials.fingerprint(_client(scope)))
                        or await self._new_per_owner.wait_seconds(caller.owner))
                if wait:
                    log.debug("refused a new session: too many from one address or owner")
                    return 429, TOO_MANY_SESSIONS % wait
            verdict = self.registry.bind(session_hash, caller.owner)
            if verdict is Bound.FULL:
                log.warning("refused a new session: the session table is full")
                return 503, SESSIONS_FULL
            if verdict is not Bound.YES:
                return 403, FORBIDDEN
        return None

    def _wrap_send(self, send, set_cookie: str | None, route: str | None, method: str, owner: str | None):
        """Add the new cookie to the response; note who created the event, or uploaded the files, an answer
        names (before the client can learn the id or the path)."""
        records_event = route is not None and owner is not None and method == "POST" and route.startswith(
            EVENT_CREATING_ROUTES)
        records_upload = route is not None and owner is not None and method == "POST" and route.rstrip(
            "/") == UPLOAD_ROUTE
        if set_cookie is None and not records_event and not records_upload:
            return send
        answer = bytearray()

        async def wrapped(message):
            if message["type"] == "http.response.start" and set_cookie:
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"set-cookie", set_cookie.encode("latin-1"))]}
            elif message["type"] == "http.response.body" and (records_event or records_upload) \
                    and len(answer) < 65536:
                answer.extend(message.get("body", b""))
                if not message.get("more_body"):
                    event_id = created_event(route, method, bytes(answer)) if records_event else None
                    if event_id:  # recorded before the client can learn the id
                        self.registry.events.record(event_id, owner)
                    for path in uploaded_paths(route, method, bytes(answer)) if records_upload else ():
                        self.registry.uploads.record(path, owner)
            await send(message)

        return wrapped


def _client(scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def printable(text: str, limit: int = 120) -> str:
    """Text from a request made safe for one log line: control characters escaped, length bounded."""
    return text[:limit].encode("unicode_escape").decode("ascii")
