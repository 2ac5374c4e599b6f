"""ChatOpenAI as real OpenAI-compatible servers need it: timeouts that fire on silence, and two quirks.

- **Silence.** The first chunk must come within ``first_chunk_timeout`` seconds of the request (connecting
  and the client's own retries included), every next one within ``chunk_timeout``; otherwise
  :class:`~agent.model_errors.ModelSilent` is raised. The openai client retries a failed request
  (``max_retries``) only before its response starts, i.e. before anything was shown.
- **Repeated tool names.** Some servers (llama-cpp-python's ``chatml-function-calling``) repeat the tool
  ``name`` in every streamed chunk; LangChain concatenates the pieces (``add_to_cartadd_to_cart``). A
  name already seen for a tool-call index is dropped from later chunks.
- **content: null.** LangChain sends an assistant tool-call message with ``content: null``, which some
  servers reject; it is sent as ``""`` instead (what OpenAI also accepts).

Configuration only, like its parent: one instance serves every session.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_openai import ChatOpenAI

from agent.model_errors import ModelSilent


class TolerantChatOpenAI(ChatOpenAI):
    first_chunk_timeout: float = 60.0
    chunk_timeout: float = 30.0

    def _get_request_payload(self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any) -> dict:
        payload = super()._get_request_payload(input_, stop=stop, **kwargs)
        for message in payload.get("messages") or []:
            if message.get("role") == "assistant" and message.get("content") is None:
                message["content"] = ""
        return payload

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: Any = None, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        stream = super()._astream(messages, stop, run_manager, **kwargs)
        named: set[Any] = set()  # tool-call indexes whose name was seen
        first, started = True, time.monotonic()
        try:
            while True:
                limit = self.first_chunk_timeout - (time.monotonic() - started) if first else self.chunk_timeout
                try:
                    async with asyncio.timeout(max(0.0, limit)):
                        chunk = await anext(stream)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise ModelSilent(self.first_chunk_timeout if first else self.chunk_timeout, first) from None
                first = False
                yield _named_once(chunk, named)
        finally:
            await stream.aclose()


def _named_once(chunk: ChatGenerationChunk, named: set) -> ChatGenerationChunk:
    """Drop a tool name already streamed for the same tool-call index (servers that repeat it)."""
    calls = getattr(chunk.message, "tool_call_chunks", None)
    for call in calls or []:
        index = call.get("index")
        if call.get("name"):
            if index in named:
                call["name"] = None
            else:
                named.add(index)
    return chunk
