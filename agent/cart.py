"""Shopping-cart state: pure functions over a plain dict, stored in the agent state.

A cart maps a line key to ``{"name", "qty", "price", "unit"}``; ``price`` is ``None`` for a custom item
that is not in the catalog. The state channel holds the cart and is updated through *operations*
(``add``/``remove``/``clear``/``replace``) folded by :func:`apply_cart_ops`, so two tool calls in one
step never overwrite each other. Nothing here is shared between users: each conversation's cart lives in
that conversation's checkpointed state.
"""

from __future__ import annotations

from typing import Any, Iterable

from agent.catalog import Catalog, normalize_item_name

Cart = dict[str, dict[str, Any]]
CartOp = dict[str, Any]


def add_op(catalog: Catalog, item: str, quantity: int) -> CartOp:
    product = catalog.find(item)
    if product is not None:
        return {"op": "add", "key": product.sku, "name": product.name, "qty": quantity,
                "price": product.price, "unit": product.unit}
    label = " ".join(item.split()) or "item"
    return {"op": "add", "key": "custom:" + normalize_item_name(label), "name": label, "qty": quantity,
            "price": None, "unit": None}


def find_line(cart: Cart, catalog: Catalog, item: str) -> str | None:
    """The cart line an item name refers to (catalog product or custom item), if any."""
    product = catalog.find(item)
    if product is not None and product.sku in cart:
        return product.sku
    custom = "custom:" + normalize_item_name(item)
    if custom in cart:
        return custom
    if custom.endswith("s") and custom[:-1] in cart:
        return custom[:-1]
    return None


def apply_cart_ops(cart: Cart | None, ops: Iterable[CartOp] | CartOp | None) -> Cart:
    """State reducer: fold operations into a new cart (never mutates its input)."""
    result: Cart = {key: dict(line) for key, line in (cart or {}).items()}
    if ops is None:
        return result
    if isinstance(ops, dict):
        ops = [ops]
    for op in ops:
        kind = op.get("op")
        if kind == "replace":
            result = {key: dict(line) for key, line in op["cart"].items()}
        elif kind == "clear":
            result = {}
        elif kind == "add":
            line = result.setdefault(op["key"], {"name": op["name"], "qty": 0, "price": op["price"],
                                                 "unit": op.get("unit")})
            line["qty"] += int(op["qty"])
        elif kind == "remove":
            line = result.get(op["key"])
            if line is None:
                continue
            qty = op.get("qty")
            if qty is None or qty >= line["qty"]:
                del result[op["key"]]
            else:
                line["qty"] -= int(qty)
    return result


def cart_total(cart: Cart) -> float:
    return round(sum(line["qty"] * line["price"] for line in cart.values() if line["price"] is not None), 2)


def cart_item_count(cart: Cart) -> int:
    return sum(line["qty"] for line in cart.values())


def describe_cart(cart: Cart, currency: str = "USD") -> str:
    if not cart:
        return "Your cart is empty."
    lines = []
    for line in cart.values():
        if line["price"] is None:
            lines.append(f"- {line['qty']} × {line['name']} (custom item, no price)")
        else:
            lines.append(f"- {line['qty']} × {line['name']} at ${line['price']:.2f} = "
                         f"${line['qty'] * line['price']:.2f}")
    custom = sum(1 for line in cart.values() if line["price"] is None)
    total = f"Total: ${cart_total(cart):.2f} {currency}"
    if custom:
        total += f" (plus {custom} custom item{'s' if custom > 1 else ''} without a price)"
    return "Your cart:\n" + "\n".join(lines) + "\n" + total + "."
