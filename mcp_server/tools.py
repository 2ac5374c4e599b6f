"""The MCP server object and its five tools: add_to_cart, remove_from_cart, view_cart, clear_cart,
my_session.

Tools learn who is calling only from the request scope (put there by ``mcp_server/http.py``) and the
request's ``_meta``; no tool takes a session, owner or conversation id as an argument. A call without a
caller on the scope is refused, never served from a shared cart.
"""

from __future__ import annotations

from typing import Annotated, Any, Awaitable, Callable

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import WithJsonSchema

from agent import cart_actions
from mcp_server import arguments
from mcp_server.carts import SCOPE_KEY, CartGone, McpCaller, McpCarts
from security.rate_limit import RateLimiter

INSTRUCTIONS = ("A shopping cart. Each MCP session has its own cart; with an assistant token from the CMW Agent "
                "page, the cart of that web conversation. Nothing here can reach anyone else's cart.")
NO_CALLER = ("No MCP session: call `initialize` first and send its Mcp-Session-Id header with every request. "
             "Nothing was changed.")
TOO_FAST = "Too many calls in this MCP session (limit: {limit} per minute). Wait {wait} seconds and try again."

Item = Annotated[Any, WithJsonSchema(dict(arguments.ITEM_SCHEMA))]
Quantity = Annotated[Any, WithJsonSchema(dict(arguments.QUANTITY_SCHEMA))]


def build_mcp_server(carts: McpCarts, *, calls_per_minute: int, redis_url: str | None = None) -> MCPServer:
    server = MCPServer("CMW Agent cart", instructions=INSTRUCTIONS)
    # counts per session fingerprint; holds no user data
    limiter = RateLimiter(calls_per_minute, redis_url=redis_url, name="mcp-calls")

    async def caller_and_hint(ctx: Context) -> tuple[McpCaller, str | None]:
        request = ctx.request_context.request
        caller = request.scope.get(SCOPE_KEY) if request is not None else None
        if not isinstance(caller, McpCaller):
            raise ToolError(NO_CALLER)
        try:
            hint = arguments.conversation_hint(ctx.request_context.meta)
        except arguments.ArgumentError as error:
            raise ToolError(str(error)) from None
        wait = await limiter.wait_seconds(carts.rate_key(caller))
        if wait:
            raise ToolError(TOO_FAST.format(limit=limiter.limit, wait=wait))
        return caller, hint

    def checked(check, value):
        try:
            return check(value)
        except arguments.ArgumentError as error:
            raise ToolError(str(error)) from None

    async def run(ctx: Context, work: Callable[[McpCaller, str | None], Awaitable[str]]) -> str:
        caller, hint = await caller_and_hint(ctx)
        try:
            return await work(caller, hint)
        except CartGone as gone:
            raise ToolError(str(gone)) from None

    @server.tool()
    async def add_to_cart(item: Item, ctx: Context, quantity: Quantity = 1) -> str:
        """Add an item to your cart. Items not in the catalog are kept as custom items without a price."""
        item, quantity = checked(arguments.item_name, item), checked(arguments.quantity, quantity)
        return await run(ctx, lambda caller, hint: carts.change(
            caller, hint, "add_to_cart", {"item": item, "quantity": quantity},
            lambda cart: cart_actions.add_item(carts.catalog, cart, item, quantity)))

    @server.tool()
    async def remove_from_cart(item: Item, ctx: Context) -> str:
        """Remove an item (all of it) from your cart."""
        item = checked(arguments.item_name, item)
        return await run(ctx, lambda caller, hint: carts.change(
            caller, hint, "remove_from_cart", {"item": item},
            lambda cart: cart_actions.remove_item(carts.catalog, cart, item)))

    @server.tool()
    async def view_cart(ctx: Context) -> str:
        """Show your cart with line prices and the total."""

        async def view(caller: McpCaller, hint: str | None) -> str:
            return cart_actions.view(carts.catalog, await carts.cart(caller, hint)).text

        return await run(ctx, view)

    @server.tool()
    async def clear_cart(ctx: Context) -> str:
        """Remove everything from your cart."""
        return await run(ctx, lambda caller, hint: carts.change(caller, hint, "clear_cart", {},
                                                                lambda cart: cart_actions.clear()))

    @server.tool()
    async def my_session(ctx: Context) -> str:
        """Facts about this MCP session only: fingerprint, when it started and was last active, its cart."""
        return await run(ctx, carts.describe)

    return server
