"""Checks on what an MCP client sends: each failure is one sentence saying what was wrong.

The tools' JSON schemas state the same limits; these checks run first, so a refused call stores nothing.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from agent.cart_actions import MAX_QUANTITY

MAX_ITEM_CHARS = 200
MAX_HINT_CHARS = 200
# `_meta` keys that hosts use for "which of my conversations is this"; a hint only narrows (see keys.py).
CONVERSATION_HINT_KEYS = ("cmw/conversation", "openai/conversation", "conversationId", "conversation_id")

ITEM_SCHEMA = MappingProxyType({"type": "string", "minLength": 1, "maxLength": MAX_ITEM_CHARS,
                                "description": "product name, e.g. 'apples'; unknown items are kept as custom items without a price"})
QUANTITY_SCHEMA = MappingProxyType({"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY,
                                    "description": "how many to add; 1 when left out"})


class ArgumentError(ValueError):
    """A bad argument; the message goes back to the MCP client as the tool's error."""


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "text", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def item_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ArgumentError(f"`item` must be text (a product name), not {_kind(value)}. Nothing was changed.")
    text = " ".join(value.split())
    if not text:
        raise ArgumentError("`item` is empty: name a product, e.g. \"apples\". Nothing was changed.")
    if len(text) > MAX_ITEM_CHARS:
        raise ArgumentError(f"`item` is {len(text):,} characters long; the limit is {MAX_ITEM_CHARS}. "
                            "Nothing was changed.")
    return text


def quantity(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(f"`quantity` must be a whole number from 1 to {MAX_QUANTITY}, not {_kind(value)}. "
                            "Nothing was changed.")
    if not 1 <= value <= MAX_QUANTITY:
        raise ArgumentError(f"`quantity` must be between 1 and {MAX_QUANTITY} (got {value}). Nothing was changed.")
    return value


def conversation_hint(meta: Mapping[str, Any] | None) -> str | None:
    """A host's per-conversation id from ``_meta``, if it sent a usable one (text, bounded); else None."""
    for key in CONVERSATION_HINT_KEYS:
        value = (meta or {}).get(key)
        if isinstance(value, str) and value.strip():
            if len(value) > MAX_HINT_CHARS:
                raise ArgumentError(f"`_meta.{key}` is longer than {MAX_HINT_CHARS} characters. Nothing was changed.")
            return value.strip()
    return None
