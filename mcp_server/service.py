"""McpService: the MCP pieces built once per app, and the SDK session manager's lifetime.

Gradio builds its FastAPI app inside ``launch()`` and runs it in its own thread and event loop, so the
SDK's session manager (whose ``run()`` task group must be running while requests are served) is started
lazily, by the first /mcp request, inside that loop, and stopped by :meth:`close`.
"""

from __future__ import annotations

import asyncio
import logging

from mcp.server.transport_security import TransportSecuritySettings

from mcp_server.carts import McpCarts
from mcp_server.tokens import AssistantTokens
from mcp_server.tools import build_mcp_server
from security.owner import OwnerCredentials
from security.rate_limit import RateLimiter
from settings import Settings

OPEN_WINDOW_SECONDS = 3600.0
MAX_BODY_BYTES = 64 * 1024

SDK_LOGGERS_WITH_RAW_IDS = ("mcp.server.streamable_http_manager", "mcp.server.streamable_http")


class McpService:
    def __init__(self, carts: McpCarts, tokens: AssistantTokens, credentials: OwnerCredentials, settings: Settings):
        # The SDK logs raw Mcp-Session-Ids at INFO/WARNING; this app names sessions by keyed fingerprints only.
        for name in SDK_LOGGERS_WITH_RAW_IDS:
            logging.getLogger(name).setLevel(logging.ERROR)
        self.carts = carts
        self.tokens = tokens
        self.credentials = credentials
        self.server = build_mcp_server(carts, calls_per_minute=settings.mcp_calls_per_minute,
                                       redis_url=settings.redis_url)
        # Not the returned Starlette app: McpEndpoint routes /mcp to the manager itself. Host and origin
        # checks are McpEndpoint's (this app is served under any host name, e.g. on Spaces).
        self.server.streamable_http_app(
            stateless_http=False, json_response=False, session_idle_timeout=settings.session_ttl,
            max_sessions=settings.mcp_max_sessions, max_request_body_size=MAX_BODY_BYTES,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        self.manager = self.server.session_manager
        # MCP sessions opened per client address per hour (keyed fingerprints and timestamps only).
        self.opened_per_address = RateLimiter(settings.mcp_sessions_per_address, window=OPEN_WINDOW_SECONDS,
                                              redis_url=settings.redis_url, name="mcp-open-address")
        self._running: asyncio.Future | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def ensure_running(self) -> None:
        """Start the SDK's session manager in this (the server's) event loop, once."""
        if self._running is None:
            self._loop = asyncio.get_running_loop()
            self._running = self._loop.create_future()
            self._stop = asyncio.Event()
            self._loop.create_task(self._run(), name="cmw-mcp-sessions")
        await asyncio.shield(self._running)

    async def _run(self) -> None:
        try:
            async with self.manager.run():
                self._running.set_result(None)
                await self._stop.wait()
        except BaseException as error:  # surface a failed start to the waiting request
            if not self._running.done():
                self._running.set_exception(RuntimeError(f"the MCP session manager failed to start: {error!r}"))
            raise

    def close(self) -> None:
        """Stop the session manager (from any thread); every MCP session ends."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
