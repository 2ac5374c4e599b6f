"""What the model sees of a conversation, and how its answers are marked.

A conversation stores what the person saw, which is more than the model should get back:

- **Notices** (a failed turn's one-sentence reason) are stored as an ``AIMessage`` marked
  ``response_metadata["cmw_notice"] = <kind>``; they are shown and exported, never sent to the model.
  Kind ``interrupted``: the worker running the turn stopped mid-answer (see :func:`unfinished`).
- **Uploads** (a file the person attached) are stored as a ``HumanMessage`` marked
  ``additional_kwargs["cmw_upload"] = {"name", "size", "summary"}``: the model reads it as the person saying
  which file they attached; it is shown as a file bubble and is not a turn (Undo and Retry skip it).
- **Cut answers** (``finish_reason == "length"``, or a stream that ended without a finish reason) are
  marked ``response_metadata["cmw_cut"] = "length" | "server"``; the words stay in the model's view.
- **Tool calls** without a result, and results without their call, never reach the model (old or
  damaged conversations included): a server would reject the request.
- **History budget**: when the conversation no longer fits ``context_tokens - max_output_tokens``, the
  oldest whole turns leave the model's view (LangChain's ``trim_messages``); the turn is told through a
  ``custom`` stream event (``{"cmw": "trimmed", "dropped": n}``).
- **No tools**: on a server that rejects ``tools`` (:class:`ModelServer` ``tools=False``) the model is
  called without them, and its prompt says the cart is unavailable.

:class:`ModelServer` is process-wide configuration about the one model server (never about a user).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.utils import count_tokens_approximately, trim_messages
from langgraph.config import get_stream_writer

from agent.model_errors import Failure

NOTICE = "cmw_notice"
CUT = "cmw_cut"
UPLOAD = "cmw_upload"
DEFAULT_CONTEXT_TOKENS = 8192
PROMPT_OVERHEAD_TOKENS = 700  # system prompt and tool schemas, roughly
NO_TOOLS_PROMPT = ("\n\nThe shopping cart is unavailable right now (the model server does not accept tools): "
                   "if asked, say so instead of pretending to change it.")


@dataclass
class ModelServer:
    """What the app knows about its model server. Shared; set at start (agent/server_probe.py), when the
    server turns out to reject tools, and when it refuses a request as too long. Holds nothing about
    any user."""

    context_tokens: int = DEFAULT_CONTEXT_TOKENS
    max_output_tokens: int = 1024
    tools: bool = True

    @property
    def history_budget(self) -> int:
        room = self.context_tokens - self.max_output_tokens - PROMPT_OVERHEAD_TOKENS
        return max(256, int(room * 0.85))  # approximate counting: keep a margin

    def refused(self, tokens_sent: int) -> bool:
        """The server refused ``tokens_sent`` (approximate) of history as too long: from now on the budget
        stays below it, so the conversation's next turn fits. False when that teaches nothing."""
        window = int(tokens_sent * 0.9) + self.max_output_tokens + PROMPT_OVERHEAD_TOKENS
        if tokens_sent < 256 or window >= self.context_tokens:
            return False
        self.context_tokens = window
        return True


INTERRUPTED = Failure("interrupted", "This answer was interrupted: the server handling it stopped. Your "
                      "conversation is intact; send your message again.")


def notice_message(failure: Failure) -> AIMessage:
    return AIMessage(content=failure.sentence, response_metadata={NOTICE: failure.kind})


def is_notice(message: BaseMessage) -> bool:
    return isinstance(message, AIMessage) and bool(message.response_metadata.get(NOTICE))


def upload_note(name: str, size_text: str, summary: str) -> HumanMessage:
    """The stored mark of an attached file (see the module docstring)."""
    return HumanMessage(content=f"[Attached file: {name} ({size_text}) - {summary}]",
                        additional_kwargs={UPLOAD: {"name": name, "size": size_text, "summary": summary}})


def upload_of(message: BaseMessage) -> dict | None:
    """The attached file an upload mark describes, or None for any other message."""
    upload = message.additional_kwargs.get(UPLOAD) if isinstance(message, HumanMessage) else None
    return upload if isinstance(upload, dict) else None


def is_turn_start(message: BaseMessage) -> bool:
    """A message the person typed (an upload mark is not one)."""
    return isinstance(message, HumanMessage) and upload_of(message) is None


def cut_of(message: BaseMessage) -> str | None:
    """How a stored answer was cut (``length``, ``server``, ``stopped``), or None."""
    if not isinstance(message, AIMessage):
        return None
    if message.response_metadata.get("stopped"):
        return "stopped"
    return message.response_metadata.get(CUT)


def cut_reason(message: AIMessage) -> str | None:
    """Whether a fresh model answer was cut: by the length limit, or by a stream without a finish."""
    if message.tool_calls or not message.text:
        return None
    finish = message.response_metadata.get("finish_reason")
    if finish == "length":
        return "length"
    return "server" if finish is None else None


def unfinished(messages: list[BaseMessage]) -> bool:
    """Whether the last turn stopped half-way, as a worker that died mid-answer leaves it: the person's
    message, a tool call or tool results with no answer after them (an attached file, a notice or any
    answer - stopped or cut included - ends a turn)."""
    if not messages or is_notice(messages[-1]) or upload_of(messages[-1]):
        return False
    last = messages[-1]
    if isinstance(last, AIMessage):
        return bool(last.tool_calls or last.invalid_tool_calls)
    return isinstance(last, (HumanMessage, ToolMessage))


def consistent(messages: list[BaseMessage]) -> list[BaseMessage]:
    """Messages without notices, unanswered tool calls or orphaned tool results."""
    messages = [m for m in messages if not is_notice(m)]
    answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    called: set[str] = set()
    kept: list[BaseMessage] = []
    for message in messages:
        if isinstance(message, AIMessage) and (message.tool_calls or message.invalid_tool_calls):
            ids = [c["id"] for c in message.tool_calls] + [c.get("id") for c in message.invalid_tool_calls]
            if not all(i in answered for i in ids):
                if message.text:  # keep the words, not the call
                    kept.append(AIMessage(content=message.content, id=message.id,
                                          response_metadata=message.response_metadata))
                continue
            called.update(ids)
        if isinstance(message, ToolMessage) and message.tool_call_id not in called:
            continue
        kept.append(message)
    return kept


def within_budget(messages: list[BaseMessage], budget: int) -> list[BaseMessage]:
    """The newest whole turns that fit ``budget`` tokens (always at least the last turn)."""
    if count_tokens_approximately(messages) <= budget:
        return messages
    kept = trim_messages(messages, max_tokens=budget, token_counter=count_tokens_approximately,
                         strategy="last", start_on="human", allow_partial=False)
    if not kept:  # the last turn alone is over the budget: send it anyway, the server decides
        starts = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage)]
        kept = messages[starts[-1]:] if starts else messages
    return kept


class TurnHygiene(AgentMiddleware):
    """Filters what the model sees (notices, broken tool calls, history over budget, tools the server
    rejects) and marks cut answers in the stored conversation."""

    def __init__(self, server: ModelServer):
        super().__init__()
        self.server = server

    def _prepare(self, request: ModelRequest) -> ModelRequest:
        messages = consistent(list(request.messages))
        kept = within_budget(messages, self.server.history_budget)
        if len(kept) < len(messages):
            get_stream_writer()({"cmw": "trimmed", "dropped": len(messages) - len(kept)})
        changes: dict[str, Any] = {"messages": kept}
        if not self.server.tools:
            prompt = (request.system_message.text if request.system_message else "") + NO_TOOLS_PROMPT
            changes.update(tools=[], system_message=SystemMessage(content=prompt))
        return request.override(**changes)

    def wrap_model_call(self, request: ModelRequest, handler: Callable) -> Any:
        return _mark_cut(handler(self._prepare(request)))

    async def awrap_model_call(self, request: ModelRequest, handler: Callable) -> Any:
        return _mark_cut(await handler(self._prepare(request)))


def _mark_cut(response: Any) -> Any:
    """Mark a cut answer before it is stored (in the model's own step: no extra checkpoint)."""
    messages = response.result if isinstance(response, ModelResponse) else [response]
    for message in messages:
        reason = cut_reason(message) if isinstance(message, AIMessage) else None
        if reason:
            message.response_metadata = {**message.response_metadata, CUT: reason}
    return response
