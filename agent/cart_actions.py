"""The cart actions, once: what each one changes and what it answers.

Both front doors use these - the chat's agent tools (agent/tools.py) and the MCP tools
(mcp_server/tools.py) - so the catalog, the rules and the wording are the same whichever way a cart is
changed. Each action is a pure function of the catalog, the current cart and its arguments; it returns
the answer text and the cart operation (or None) that :func:`agent.cart.apply_cart_ops` folds in.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.cart import Cart, CartOp, add_op, apply_cart_ops, describe_cart, find_line
from agent.catalog import Catalog

MAX_QUANTITY = 1000


@dataclass(frozen=True)
class CartAction:
    text: str
    op: CartOp | None = None


def add_item(catalog: Catalog, cart: Cart, item: str, quantity: int) -> CartAction:
    if not 1 <= quantity <= MAX_QUANTITY:
        return CartAction(f"Quantity must be between 1 and {MAX_QUANTITY}; nothing was added.")
    op = add_op(catalog, item, quantity)
    after = apply_cart_ops(cart, op)
    if op["price"] is None:
        text = (f"Added {quantity} × {op['name']} to your cart as a custom item: it is not in our "
                f"catalog, so it has no price.")
    else:
        per = "each" if op["unit"] == "each" else f"per {op['unit']}"
        text = f"Added {quantity} × {op['name']} (${op['price']:.2f} {per}) to your cart."
    return CartAction(f"{text}\n{describe_cart(after, catalog.currency)}", op)


def remove_item(catalog: Catalog, cart: Cart, item: str, quantity: int | None = None) -> CartAction:
    key = find_line(cart, catalog, item)
    if key is None:
        return CartAction(f"There is no {item} in your cart, so nothing was removed.\n"
                          f"{describe_cart(cart, catalog.currency)}")
    op = {"op": "remove", "key": key, "qty": quantity}
    name = cart[key]["name"]
    after = apply_cart_ops(cart, op)
    removed = f"{quantity} × {name}" if quantity else f"all {name}"
    return CartAction(f"Removed {removed} from your cart.\n{describe_cart(after, catalog.currency)}", op)


def view(catalog: Catalog, cart: Cart) -> CartAction:
    return CartAction(describe_cart(cart, catalog.currency))


def clear() -> CartAction:
    return CartAction("Your cart is now empty.", {"op": "clear"})
