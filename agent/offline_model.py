"""The built-in offline chat model: deterministic, tool-calling, streaming, no network.

It is a real LangChain ``BaseChatModel`` (``bind_tools``, token streaming, tool calls) so the agent,
the UI and the tests run the same code path as with ChatOpenAI. Every answer is a pure function of the
transcript it is given - the instance holds configuration only (token delay, bound tool names), never a
counter or anything about a user - so one shared instance serves every session, and a leak between
conversations would show up in what it says.

Phrases it understands (case-insensitive, punctuation optional) are listed in ``README.md``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from types import MappingProxyType
from typing import Any, AsyncIterator, Iterator, Sequence

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

_END = r"[\s.!?,;:]*$"
_NUMBER_WORDS = MappingProxyType({"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                 "seven": 7, "eight": 8, "nine": 9, "ten": 10, "a dozen": 12})
_QTY = r"(?:(\d+|a dozen|an|a|one|two|three|four|five|six|seven|eight|nine|ten)\s+)?"
_CART = r"\s+(?:from|to|in|into)\s+(?:my\s+|the\s+)?(?:shopping\s+)?(?:cart|basket)"

PATTERNS: MappingProxyType[str, re.Pattern[str]] = MappingProxyType({
    "set_name": re.compile(r"^\s*my\s+name\s+is\s+(.+?)" + _END, re.I | re.S),
    "ask_name": re.compile(r"^\s*what(?:['’]?s|\s+is)\s+my\s+name" + _END, re.I),
    "add": re.compile(r"^\s*(?:please\s+)?add\s+" + _QTY + r"(.+?)\s+to\s+(?:my\s+|the\s+)?(?:shopping\s+)?"
                      r"(?:cart|basket)" + _END, re.I | re.S),
    "remove": re.compile(r"^\s*(?:please\s+)?(?:remove|delete|take)\s+" + _QTY + r"(.+?)" + _CART + _END,
                         re.I | re.S),
    "view": re.compile(r"^\s*(?:what(?:['’]?s|\s+is)\s+in\s+my\s+(?:cart|basket)|(?:show|view|see)\s+(?:me\s+)?"
                       r"my\s+(?:shopping\s+)?(?:cart|basket)|my\s+cart)" + _END, re.I),
    "clear": re.compile(r"^\s*(?:please\s+)?(?:clear|empty)\s+(?:my\s+|the\s+)?(?:cart|basket)" + _END, re.I),
    "session": re.compile(r"^\s*(?:show\s+(?:me\s+)?my\s+session(?:\s+info)?|session\s+info)" + _END, re.I),
    "count": re.compile(r"^\s*count\s+to\s+(\d{1,4})" + _END, re.I),
    "files": re.compile(r"^\s*(?:(?:what|which)\s+files\s+do\s+i\s+have|(?:list|show)\s+(?:me\s+)?my\s+files|"
                        r"my\s+files)" + _END, re.I),
    "describe": re.compile(r"^\s*describe\s+(?:the\s+file\s+|my\s+file\s+)?(.+?)" + _END, re.I | re.S),
    "rows": re.compile(r"^\s*how\s+many\s+rows\s+(?:are\s+)?(?:there\s+)?in\s+(.+?)" + _END, re.I | re.S),
    "sum": re.compile(r"^\s*(?:sum|total)\s+(?:up\s+|of\s+)?(?:the\s+)?(.+?)\s+(?:column\s+)?in\s+(.+?)" + _END,
                      re.I | re.S),
    "search": re.compile(r"^\s*search\s+(?:in\s+|through\s+)?my\s+files\s+for\s+(.+?)" + _END, re.I | re.S),
})
_QUOTES = "\"'“”‘’`"

HELP_TEXT = (
    "I'm the offline demo model, so I only understand a few phrases. Try:\n"
    "- \"My name is Alice\", then \"What's my name?\"\n"
    "- \"Add 2 apples to my cart\", \"Remove apples from my cart\", \"What's in my cart?\", \"Clear my cart\"\n"
    "- \"Show my session\"\n"
    "- \"Count to 40\" (a streaming demo)\n"
    "- Attach a file with the paperclip, then \"What files do I have?\", \"Describe orders.csv\", \"How many rows "
    "are in orders.csv?\", \"Sum amount in orders.csv\", \"Search my files for refund\"\n"
    "Set OPENAI_API_KEY to talk to a real model."
)
MAX_COUNT = 1000


def _quantity(word: str | None) -> int:
    if not word:
        return 1
    word = word.lower()
    return int(word) if word.isdigit() else _NUMBER_WORDS.get(word, 1)


def _told_name(history: Sequence[BaseMessage]) -> str | None:
    """The most recent name the user gave in this transcript."""
    for message in reversed(history):
        if isinstance(message, HumanMessage):
            match = PATTERNS["set_name"].match(message.text)
            if match:
                return match.group(1).strip()
    return None


def decide(messages: Sequence[BaseMessage], tool_names: Sequence[str] = ()) -> AIMessage:
    """The offline model's whole brain: the next AI message for a transcript."""
    if not messages:
        return AIMessage(content=HELP_TEXT)
    last = messages[-1]
    if isinstance(last, ToolMessage):
        results = []
        for message in reversed(messages):
            if not isinstance(message, ToolMessage):
                break
            results.append(message.text)
        return AIMessage(content="\n\n".join(reversed(results)))
    if not isinstance(last, HumanMessage):
        return AIMessage(content=HELP_TEXT)

    text = last.text
    call_id = f"call_{len(messages)}"  # deterministic: position in the transcript

    def tool_call(tool: str, **args: Any) -> AIMessage:
        if tool not in tool_names:
            return AIMessage(content=f"I would use the {tool} tool, but it is not available here.")
        return AIMessage(content="", tool_calls=[{"name": tool, "args": args, "id": call_id, "type": "tool_call"}])

    if match := PATTERNS["set_name"].match(text):
        name = match.group(1).strip()
        return AIMessage(content=f"Nice to meet you, {name}! I'll remember your name in this conversation.")
    if PATTERNS["ask_name"].match(text):
        name = _told_name(messages[:-1])
        if name:
            return AIMessage(content=f"Your name is {name}.")
        return AIMessage(content="I don't know your name yet. Tell me with \"My name is ...\".")
    if match := PATTERNS["add"].match(text):
        return tool_call("add_to_cart", item=match.group(2).strip(), quantity=_quantity(match.group(1)))
    if match := PATTERNS["remove"].match(text):
        args: dict[str, Any] = {"item": match.group(2).strip()}
        if match.group(1):
            args["quantity"] = _quantity(match.group(1))
        return tool_call("remove_from_cart", **args)
    if PATTERNS["view"].match(text):
        return tool_call("view_cart")
    if PATTERNS["clear"].match(text):
        return tool_call("clear_cart")
    if PATTERNS["session"].match(text):
        return tool_call("session_info")
    if PATTERNS["files"].match(text):
        return tool_call("list_my_files")
    if match := PATTERNS["rows"].match(text):
        return tool_call("query_table", name=match.group(1).strip(_QUOTES), operation="count")
    if match := PATTERNS["sum"].match(text):
        return tool_call("query_table", name=match.group(2).strip(_QUOTES), operation="sum",
                         column=match.group(1).strip(_QUOTES))
    if match := PATTERNS["search"].match(text):
        return tool_call("search_my_files", query=match.group(1).strip(_QUOTES))
    if match := PATTERNS["describe"].match(text):
        return tool_call("describe_file", name=match.group(1).strip(_QUOTES))
    if match := PATTERNS["count"].match(text):
        upto = min(int(match.group(1)), MAX_COUNT)
        return AIMessage(content=" ".join(str(n) for n in range(1, upto + 1)))
    return AIMessage(content=HELP_TEXT)


def tokens(text: str) -> list[str]:
    """Split text into stream tokens: one word (with its trailing space) per token."""
    return re.findall(r"\s*\S+", text) or [text]


class OfflineChatModel(BaseChatModel):
    """Deterministic chat model for demos and tests. Configuration only; no per-user state."""

    token_delay: float = Field(default=0.02, ge=0)
    tool_names: tuple[str, ...] = ()

    @property
    def _llm_type(self) -> str:
        return "cmw-offline"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"token_delay": self.token_delay}

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> "OfflineChatModel":
        names = []
        for tool in tools:
            if isinstance(tool, dict):
                names.append(tool.get("name") or tool.get("function", {}).get("name"))
            else:
                names.append(getattr(tool, "name", getattr(tool, "__name__", str(tool))))
        return self.model_copy(update={"tool_names": tuple(n for n in names if n)})

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        reply = decide(messages, self.tool_names)
        finish = "tool_calls" if reply.tool_calls else "stop"
        return ChatResult(generations=[ChatGeneration(message=reply, generation_info={"finish_reason": finish})])

    def _chunks(self, messages: list[BaseMessage]) -> Iterator[ChatGenerationChunk]:
        reply = decide(messages, self.tool_names)
        if reply.tool_calls:
            call = reply.tool_calls[0]
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[{
                "name": call["name"], "args": json.dumps(call["args"]), "id": call["id"], "index": 0,
                "type": "tool_call_chunk"}]), generation_info={"finish_reason": "tool_calls"})
            return
        words = tokens(reply.text)
        for i, token in enumerate(words):  # the last one says the answer is complete, as real servers do
            done = {"finish_reason": "stop"} if i == len(words) - 1 else None
            yield ChatGenerationChunk(message=AIMessageChunk(content=token), generation_info=done)

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages):
            if self.token_delay:
                time.sleep(self.token_delay)
            if run_manager and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages):
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            if run_manager and chunk.text:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
