"""What a person reads when something fails: one sentence saying what happened and what they can do.

Tracebacks go to the log; the page gets a sentence from :func:`failure_message`, chosen by the kind of
failure (storage, model unreachable, API key refused, model timeout, model rate limit) found anywhere in
the exception's chain.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from contextlib import contextmanager

STORE_DOWN = ("Your conversation could not be read or saved just now: the assistant's storage is not "
              "available. Please try again in a minute; if it keeps happening, tell whoever runs this assistant.")
MODEL_UNREACHABLE = ("The assistant could not reach its language model. Please try again in a minute "
                     "(Retry sends your message again).")
MODEL_KEY_REFUSED = ("The language model refused this assistant's API key, so it cannot answer right now. "
                     "Whoever runs it needs to check OPENAI_API_KEY; please try again later.")
MODEL_TIMEOUT = ("The language model took too long to answer. Please try again (Retry), perhaps with a "
                 "shorter message.")
MODEL_BUSY = ("The language model is overloaded or rate-limited right now. Please wait a minute and try "
              "again (Retry).")
SOMETHING_FAILED = ("Sorry, something went wrong while answering. Please try again (Retry); if it keeps "
                    "happening, start a new chat.")


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _kind(error: BaseException) -> str | None:
    name = type(error).__name__
    module = type(error).__module__ or ""
    if module.startswith("openai"):
        if name in {"AuthenticationError", "PermissionDeniedError"}:
            return MODEL_KEY_REFUSED
        if name == "APITimeoutError":
            return MODEL_TIMEOUT
        if name == "APIConnectionError":
            return MODEL_UNREACHABLE
        if name in {"RateLimitError", "InternalServerError"}:
            return MODEL_BUSY
    if module.startswith("httpx"):
        if "Timeout" in name:
            return MODEL_TIMEOUT
        if name in {"ConnectError", "RemoteProtocolError", "ReadError"}:
            return MODEL_UNREACHABLE
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return MODEL_TIMEOUT
    if isinstance(error, sqlite3.Error) or module.startswith(("psycopg", "aiosqlite")):
        return STORE_DOWN
    if isinstance(error, OSError):
        return STORE_DOWN
    return None


def failure_message(error: BaseException) -> str:
    """The sentence for the person whose action failed (never the exception's own text)."""
    for link in _chain(error):
        kind = _kind(link)
        if kind:
            return kind
    return SOMETHING_FAILED


@contextmanager
def told_to_the_person(log: logging.Logger, what: str):
    """Around a handler's work: a failure is logged with its traceback and reaches the page as one
    sentence (a ``gr.Error`` with :func:`failure_message`) instead of a bare "Error"."""
    import gradio as gr

    try:
        yield
    except gr.Error:
        raise
    except Exception as error:
        log.exception("%s failed", what)
        raise gr.Error(failure_message(error), print_exception=False) from None
