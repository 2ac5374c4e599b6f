"""Agent tools. Each reaches the user's data only through LangChain's runtime (state and context).

No tool takes a session, user or conversation id as an argument, so whatever the model is told, a tool
can only ever read or change the cart of the conversation it runs in.
"""

from __future__ import annotations

from datetime import datetime, timezone

from langchain.tools import ToolRuntime, tool
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.types import Command

from agent import cart_actions
from agent.cart import Cart, cart_item_count
from agent.cart_actions import CartAction
from agent.catalog import Catalog
from agent.context import TurnContext
from agent.hygiene import is_notice, is_turn_start


def _timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _reply(runtime: ToolRuntime, text: str, cart_op: dict | None = None) -> Command:
    update: dict = {"messages": [ToolMessage(content=text, tool_call_id=runtime.tool_call_id,
                                             artifact={"cart_op": cart_op} if cart_op else None)]}
    if cart_op:
        update["cart"] = cart_op
    return Command(update=update)


def _cart(runtime: ToolRuntime) -> Cart:
    return dict(runtime.state.get("cart") or {})


def _act(runtime: ToolRuntime, action: CartAction) -> Command:
    return _reply(runtime, action.text, action.op)


def build_tools(catalog: Catalog) -> list[BaseTool]:
    """The tool set; closes over the read-only catalog only."""

    @tool
    def add_to_cart(item: str, runtime: ToolRuntime[TurnContext], quantity: int = 1) -> Command:
        """Add an item to the user's shopping cart. `item` is the product name, `quantity` how many."""
        return _act(runtime, cart_actions.add_item(catalog, _cart(runtime), item, quantity))

    @tool
    def remove_from_cart(item: str, runtime: ToolRuntime[TurnContext], quantity: int | None = None) -> Command:
        """Remove an item from the user's cart; without `quantity`, remove all of it."""
        return _act(runtime, cart_actions.remove_item(catalog, _cart(runtime), item, quantity))

    @tool
    def view_cart(runtime: ToolRuntime[TurnContext]) -> Command:
        """Show the user's cart with line prices and the total."""
        return _act(runtime, cart_actions.view(catalog, _cart(runtime)))

    @tool
    def clear_cart(runtime: ToolRuntime[TurnContext]) -> Command:
        """Remove everything from the user's cart."""
        return _act(runtime, cart_actions.clear())

    @tool
    def session_info(runtime: ToolRuntime[TurnContext]) -> Command:
        """Show facts about the current user's own session (never anyone else's)."""
        session = runtime.context
        messages = runtime.state.get("messages") or []
        count = sum(1 for m in messages if is_turn_start(m)
                    or (isinstance(m, AIMessage) and m.text and not m.tool_calls and not is_notice(m)))
        cart = runtime.state.get("cart") or {}
        text = ("Your session:\n"
                f"- Fingerprint: {session.fingerprint} (a keyed, one-way hash; the raw session id is never shown)\n"
                f"- Started: {_timestamp(session.created_at)}\n"
                f"- Last active: {_timestamp(session.last_active)}\n"
                f"- Messages in this conversation: {count}\n"
                f"- Cart: {cart_item_count(cart)} item(s) in {len(cart)} line(s)")
        return _reply(runtime, text)

    return [add_to_cart, remove_from_cart, view_cart, clear_cart, session_info]
