"""Checks on what a user typed, before anything reaches the agent or the store."""

from __future__ import annotations

import re
import unicodedata

EMPTY_MESSAGE = "Please type a message first."
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def clean_message(raw: object) -> str:
    """Normalised text of a submitted message: NFC, no control or bidi characters, trimmed.

    Accepts whatever a client sent (None, a number, a multimodal dict, text with lone surrogates).
    """
    if isinstance(raw, dict):
        raw = raw.get("text", "")
    text = "" if raw is None else str(raw)
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")  # lone surrogates -> U+FFFD
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n"))
    return _CONTROL.sub("", text).strip()


def too_long_message(limit: int) -> str:
    return f"Your message is longer than {limit:,} characters. Please shorten it and send it again."


def refusal_for(text: str, *, max_chars: int) -> str | None:
    """The user-facing reason a cleaned message is refused, or None when it may go to the agent."""
    if not text:
        return EMPTY_MESSAGE
    if len(text) > max_chars:
        return too_long_message(max_chars)
    return None
