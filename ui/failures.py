"""What a person reads when something fails: one sentence saying what happened and what they can do.

Tracebacks go to the log; the page gets a sentence from :func:`failure_message`, chosen by the kind of
failure found anywhere in the exception's chain: the model's (unreachable, key refused, model unknown,
context too long, tools refused, rate limit, timeout, ... - agent/model_errors.py), storage, or a
conversation another worker holds too long. A turn interrupted because its worker stopped is told by a
stored notice (agent/hygiene.py ``INTERRUPTED``), shown like every other one.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import contextmanager

from agent.hygiene import INTERRUPTED as _INTERRUPTED
from agent.model_errors import SENTENCES, Failure, error_chain, model_failure
from memory.leases import LeaseBusy

STORE_DOWN = ("Your conversation could not be read or saved just now: the assistant's storage is not "
              "available. Please try again in a minute; if it keeps happening, tell whoever runs this assistant.")
MODEL_UNREACHABLE = SENTENCES["unreachable"]
MODEL_KEY_REFUSED = SENTENCES["auth"]
MODEL_TIMEOUT = SENTENCES["timeout"]
MODEL_BUSY = SENTENCES["rate_limited"]
ANSWER_INTERRUPTED = _INTERRUPTED.sentence
CONVERSATION_BUSY = ("This conversation is still busy with another answer (in another tab or window). Please "
                     "wait until it has finished, then send your message again.")
SOMETHING_FAILED = ("Sorry, something went wrong while answering. Please try again (Retry); if it keeps "
                    "happening, start a new chat.")


def _store_down(error: BaseException) -> bool:
    module = type(error).__module__ or ""
    return isinstance(error, (sqlite3.Error, OSError)) or module.startswith(("psycopg", "aiosqlite"))


def turn_failure(error: BaseException) -> Failure:
    """Why a turn failed: the model's reason if there is one, else storage, else unknown."""
    failure = model_failure(error)
    if failure is not None:
        return failure
    chain = list(error_chain(error))
    if any(isinstance(link, LeaseBusy) for link in chain):
        return Failure("busy", CONVERSATION_BUSY)
    if any(_store_down(link) for link in chain):
        return Failure("store", STORE_DOWN)
    return Failure("unknown", SOMETHING_FAILED)


def failure_message(error: BaseException) -> str:
    """The sentence for the person whose action failed (never the exception's own text)."""
    return turn_failure(error).sentence


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
