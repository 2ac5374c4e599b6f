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

from gradio_compat import BODY_ROUTES, api_route, named_sessions
from memory.registry import SessionRegistry
from security.caller import SCOPE_KEY, Caller
from security.cookie_mode import cookie_mode
from security.cookies import CookieHeaderTooLarge, cookie_pairs
from security.owner import OwnerCredentials

log = logging.getLogger("cmw.http_guard")

MAX_BODY_BYTES = 1_000_000
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
FORBIDDEN = b'{"detail": "This session belongs to someone else. Reload the page to start your own."}'
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
                 allowed_origins: frozenset[str] = frozenset(), same_site: str = "lax"):
        self.app = app
        self.credentials = credentials
        self.registry = registry
        self.allowed_origins = frozenset(allowed_origins)
        self.same_site = same_site

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        route = api_route(scope["path"])
        if (route is not None or scope["method"] not in _SAFE_METHODS) and is_cross_site(headers, self.allowed_origins):
            log.warning("refused a cross-site %s request (Sec-Fetch-Site=%r)", scope["method"],
                        headers.get("sec-fetch-site"))
            return await _respond(send, 403, CROSS_SITE)
        mode = cookie_mode(scope)
        try:
            tokens = [value for name, value in cookie_pairs(scope.get("headers", [])) if name == mode.name]
        except CookieHeaderTooLarge:
            return await _respond(send, 431, COOKIES_TOO_LARGE)
        if len(tokens) > 1:
            log.warning("refused a request with %d owner cookies", len(tokens))
            return await _respond(send, 400, DUPLICATE_COOKIES)
        owner = self.credentials.owner_of(tokens[0]) if tokens else None

        body = b""
        named: list[tuple[str, bool]] = []
        if route is not None:
            if route.startswith("deep_link"):
                return await _respond(send, 404, b'{"detail": "Not Found"}')
            if scope["method"] == "POST" and route.startswith(BODY_ROUTES):
                body, too_large = await _read_body(receive)
                if too_large:
                    return await _respond(send, 413, b'{"detail": "Request too large."}')
                receive = _replay(body)
            named = named_sessions(scope, route, body)

        set_cookie = None
        if owner is None and may_mint(scope, headers, bool(named), mode.partitioned):
            token = self.credentials.mint()
            owner = self.credentials.owner_of(token)
            set_cookie = mode.set_cookie_header(token, self.same_site)
        caller = Caller(owner)
        if owner is None and named and not tokens and "sec-fetch-site" in headers:
            # A browser that keeps no cookie at all: the tab's own session, ending with the tab.
            caller = Caller(self.credentials.tab_owner(named[0][0]), tab_only=True)
        for session_hash, may_bind in named:
            if caller.owner is None or not self._allowed(session_hash, caller.owner, may_bind):
                log.warning("refused %s for session %s: not its owner", route.split("/")[0],
                            self.credentials.fingerprint(session_hash))
                return await _respond(send, 403, FORBIDDEN, set_cookie)
        scope = {**scope, "state": {**scope.get("state", {}), SCOPE_KEY: caller}}

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
        return session is None or session.may_be_used_by(owner, None)


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
