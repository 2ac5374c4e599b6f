"""Why a model call failed, in one sentence a person can act on (the detail goes to the operator's log).

:func:`model_failure` maps whatever the model layer raised - openai / langchain-openai / httpx errors,
our own timeouts, malformed replies - anywhere in the exception's chain to a :class:`Failure`: a short
``kind`` for logs and stored notices, and the sentence the chat shows (and ``/chat`` returns). Failures
that are not the model's (storage, bugs) are ui/failures.py's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import MappingProxyType

SERVER_HINT = "the server's log has the details"


class ModelSilent(asyncio.TimeoutError):
    """The model server sent nothing for too long (before the first chunk, or between two)."""

    def __init__(self, seconds: float, first: bool):
        self.seconds, self.first = seconds, first
        where = "before its first chunk" if first else "between two chunks"
        super().__init__(f"model server silent for {seconds:g} s {where}")


class MalformedToolCall(ValueError):
    """The model asked for a tool with arguments that are not valid JSON (nothing was run)."""


class ToolsUnsupported(RuntimeError):
    """The model server rejects the ``tools`` parameter (a server-side flag is missing)."""


@dataclass(frozen=True)
class Failure:
    kind: str  # unreachable | auth | model_not_found | context | tools | rate_limited | timeout | ...
    sentence: str


SENTENCES = MappingProxyType({  # what happened, then what to do (the style of ui/failures.py)
    "unreachable": "The assistant could not reach its language model. Please try again in a minute "
                   "(Retry sends your message again).",
    "auth": "The language model refused this assistant's API key, so it cannot answer right now. "
            "Whoever runs it needs to check OPENAI_API_KEY; please try again later.",
    "model_not_found": "The language model server does not know the configured model. Whoever runs this "
                       "assistant needs to fix CMW_MODEL (or OPENAI_BASE_URL, which usually ends in /v1); "
                       "please try again later.",
    "context": "This conversation is too long for the language model. Start a New chat, or try again with a "
               "shorter message.",
    "tools": "The language model server does not accept tools, so the cart is unavailable. Whoever runs this "
             "assistant can turn tool calling on (see the README); please try again later.",
    "rate_limited": "The language model is overloaded or rate-limited right now. Please wait a minute and try "
                    "again (Retry).",
    "timeout": "The language model took too long to answer. Please try again (Retry), perhaps with a shorter "
               "message.",
    "empty": "The language model server ended the answer before sending anything, often because the "
             "conversation is too long for it. Please try again, or start a New chat.",
    "malformed_tool_call": "The language model asked for a tool in a form that could not be read, so nothing "
                           "was done. Please try again, perhaps in other words.",
    "server_error": "The language model server had an internal error. Please try again (Retry).",
    "dropped": "The language model server broke off the answer. Please try again (Retry); if it keeps "
               "happening, start a New chat.",
})

_CONTEXT_WORDS = ("context length", "context_length", "context window", "maximum context", "too many tokens",
                  "prompt is too long", "exceeds the context", "n_ctx", "input tokens exceed", "context size")
_TOOLS_WORDS = ("--enable-auto-tool-choice", "--jinja", "tool choice", "tool_choice", "does not support tools",
                "tools param", "tools are not supported", "tool calling is not", "function calling is not")


def _status(error: BaseException) -> int | None:
    status = getattr(error, "status_code", None)
    return status if isinstance(status, int) else None


def error_chain(error: BaseException | None):
    """``error``, then what caused it, and so on (each once)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _kind(error: BaseException) -> str | None:
    import httpx
    import openai

    text = str(error).lower()
    if isinstance(error, (ModelSilent, openai.APITimeoutError, httpx.TimeoutException, TimeoutError)):
        return "timeout"
    if isinstance(error, MalformedToolCall):
        return "malformed_tool_call"
    if isinstance(error, ToolsUnsupported):
        return "tools"
    if isinstance(error, (openai.APIConnectionError, httpx.ConnectError, ConnectionRefusedError)):
        return "unreachable"
    if isinstance(error, (httpx.RemoteProtocolError, httpx.ReadError)):
        return "dropped"
    status = _status(error)
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limited"
    if status is not None or isinstance(error, openai.APIError):
        if any(word in text for word in _CONTEXT_WORDS) or type(error).__name__.endswith("ContextOverflowError"):
            return "context"
        if status in (400, 422, 500) and any(word in text for word in _TOOLS_WORDS):
            return "tools"
        if status == 404:
            return "model_not_found"
        if status is None or status >= 500:
            return "server_error"
    if isinstance(error, ValueError) and "no generations found in stream" in text:
        return "empty"
    return None


def model_failure(error: BaseException) -> Failure | None:
    """The model's failure found in ``error``'s chain, with its sentence; None when it is not the model's."""
    for link in error_chain(error):
        kind = _kind(link)
        if kind:
            return Failure(kind, SENTENCES[kind])
    return None


def is_tools_rejection(error: BaseException) -> bool:
    failure = model_failure(error)
    return failure is not None and failure.kind == "tools"
