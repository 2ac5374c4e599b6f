"""The /mcp endpoint: an ASGI middleware in front of the official SDK's stateful session manager.

What every request to ``/mcp`` goes through, in order (anything else passes on to Gradio untouched):

1. browsers from other sites are refused (``Sec-Fetch-Site`` cross-site/same-site, a foreign ``Origin``);
2. only the initialize handshake (protocol 2025-11-25 and earlier) is served: the SDK's session-less
   2026-07-28 mode is refused, because a request without a session has no cart;
3. a bearer token, if sent, must be live (not expired, revoked or deleted); the SDK then binds the MCP
   session to that token, so no other credential - and no token-less caller - can use the session;
4. without an ``Mcp-Session-Id`` only ``initialize`` is accepted (bounded per client address); with
   one, the SDK serves it only if it is live and was opened with the same credential, else 404 with a
   sentence saying what to do;
5. the caller (:class:`~mcp_server.carts.McpCaller`) is put on the request scope for the tools.
"""

from __future__ import annotations

import json
import logging

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers

from mcp_server.carts import SCOPE_KEY, McpCaller
from mcp_server.service import McpService
from security.asgi_body import read_body, replay
from security.http_guard import is_cross_site

log = logging.getLogger("cmw.mcp")

MCP_PATHS = ("/mcp", "/mcp/")
MAX_BODY_BYTES = 64 * 1024
CROSS_SITE = ("Requests to /mcp from web pages of other sites are refused. Connect an MCP client "
              "(not a browser page) to this URL.")
MODERN_PROTOCOL = ("This server needs an MCP session: use the initialize handshake (protocol 2025-11-25 or "
                   "earlier) and send the Mcp-Session-Id it returns with every request.")
NO_SESSION = ("No MCP session: send `initialize` first (without an Mcp-Session-Id), then send the "
              "Mcp-Session-Id it returns with every request. Nothing was changed.")
UNKNOWN_SESSION = ("Unknown or expired MCP session, or one opened with a different credential. Start a new "
                   "session: send `initialize` without an Mcp-Session-Id. Nothing was changed.")
BAD_TOKEN = ("This assistant token is invalid, expired or revoked. Make a new one in the CMW Agent page "
             "under \"Connect an assistant\", or connect without a token for a cart of your own.")
TOO_MANY = ("Too many MCP sessions from your address (limit: {limit} per hour). Close sessions you no longer "
            "use or wait {wait} seconds.")
TOO_LARGE = "Request too large (limit: 64 KB)."


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


async def _refuse(send, status: int, message: str, extra_headers: list | None = None) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *(extra_headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _is_initialize(body: bytes) -> bool:
    try:
        message = json.loads(body)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("method") == "initialize"


def _explain_unknown_session(send):
    """Replace the SDK's bare 404 "Session not found" with a sentence saying what to do."""
    replaced = False

    async def wrapped(message):
        nonlocal replaced
        if message["type"] == "http.response.start" and message["status"] == 404:
            replaced = True
            return await _refuse(send, 404, UNKNOWN_SESSION)
        if replaced:
            return None
        return await send(message)

    return wrapped


class McpEndpoint:
    """``launch(app_kwargs={"middleware": [guard, Middleware(McpEndpoint, service=...)]})``."""

    def __init__(self, app, *, service: McpService):
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in MCP_PATHS:
            return await self.app(scope, receive, send)
        if is_cross_site(Headers(scope=scope), frozenset()):  # stricter than the page: no allowed origins
            return await _refuse(send, 403, CROSS_SITE)
        version = _header(scope, b"mcp-protocol-version")
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            return await _refuse(send, 400, MODERN_PROTOCOL)
        token = None
        authorization = _header(scope, b"authorization")
        if authorization is not None:
            scheme, _, raw = authorization.partition(" ")
            token = await self.service.tokens.verify(raw.strip()) if scheme.lower() == "bearer" else None
            if token is None:
                return await _refuse(send, 401, BAD_TOKEN, [(b"www-authenticate", b'Bearer error="invalid_token"')])
            scope = {**scope, "user": AuthenticatedUser(AccessToken(token=token.id, client_id=token.id, scopes=["cart"],
                                                                    expires_at=int(token.expires_at)))}
        address = self.service.credentials.fingerprint((scope.get("client") or ("unknown", 0))[0])
        session_id = _header(scope, b"mcp-session-id")
        await self.service.ensure_running()
        if session_id is None:
            return await self._open(scope, receive, send, address)
        scope = {**scope, SCOPE_KEY: McpCaller(session_id, address, token)}
        await self.service.manager.handle_request(scope, receive, _explain_unknown_session(send))

    async def _open(self, scope, receive, send, address: str) -> None:
        """A request without a session: only ``initialize`` may open one, a bounded number per address."""
        if scope["method"] != "POST":
            return await _refuse(send, 400, NO_SESSION)
        body = await read_body(receive, MAX_BODY_BYTES)
        if body is None:
            return await _refuse(send, 413, TOO_LARGE)
        if not _is_initialize(body):
            return await _refuse(send, 400, NO_SESSION)
        wait = await self.service.opened_per_address.wait_seconds(address)
        if wait:
            limit = self.service.opened_per_address.limit
            return await _refuse(send, 429, TOO_MANY.format(limit=limit, wait=wait),
                                 [(b"retry-after", str(wait).encode())])

        async def note_opened(message):
            if message["type"] == "http.response.start" and message["status"] == 200:
                opened = next((v.decode("latin-1") for k, v in message.get("headers", []) if k == b"mcp-session-id"), "")
                log.info("MCP session %s opened", self.service.credentials.fingerprint(opened) if opened else "-")
            await send(message)

        await self.service.manager.handle_request(scope, replay(body, receive), note_opened)
