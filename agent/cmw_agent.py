"""CmwAgent: one per session, a thin handle over the shared, read-only agent graph.

The compiled graph (model + tools + checkpointer) is built once per process by
:func:`build_agent_graph` and holds no user data: every run names its conversation through the
checkpointer's ``thread_id`` and its user through the runtime context.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, AsyncIterator, Awaitable, Callable, Union

from langchain.agents import AgentState, create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langgraph.constants import START
from langgraph.types import Checkpointer

from agent.cart import Cart, apply_cart_ops
from agent.catalog import Catalog
from agent.context import TurnContext
from langchain_core.messages.utils import count_tokens_approximately

from agent.hygiene import ModelServer, TurnHygiene, consistent, cut_reason, within_budget
from agent.model_errors import MalformedToolCall, is_tools_rejection, model_failure
from agent.file_tools import build_file_tools
from agent.tools import build_tools
from memory.conversation_memory import ConversationMemory, ConversationMemoryManager

log = logging.getLogger("cmw.agent")

SYSTEM_PROMPT = (
    "You are a helpful shopping assistant. You can manage the user's shopping cart with your tools and "
    "show facts about the user's own session. The user can attach files (tables, text, PDF) to the "
    "conversation: list, describe, query and search them with your file tools, and answer from what they "
    "return. You only ever see this one user's conversation, cart and files; there is no way to see other "
    "users' data, so say so if asked."
)


class CmwAgentState(AgentState):
    """Agent state checkpointed per conversation: the messages plus this conversation's cart."""

    cart: Annotated[Cart, apply_cart_ops]


def build_agent_graph(model: BaseChatModel, catalog: Catalog, checkpointer: Checkpointer, middleware=()):
    """The process-wide compiled agent graph. Read-only after construction; shared by all sessions."""
    return create_agent(model, build_tools(catalog) + build_file_tools(), system_prompt=SYSTEM_PROMPT, middleware=list(middleware),
                        state_schema=CmwAgentState, context_schema=TurnContext, checkpointer=checkpointer)


class AgentRuntime:
    """The shared agent: model, tools and middleware compiled over the store's checkpointer.

    Async checkpointers bind the running event loop, so the graph is compiled on first use, inside the
    app's loop. After that it is read-only and shared by every session.
    """

    def __init__(self, model: BaseChatModel, catalog: Catalog,
                 checkpointer: Callable[[], Awaitable[Checkpointer]], middleware=(),
                 server: ModelServer | None = None):
        self.server = server or ModelServer()
        self._model, self._catalog = model, catalog
        self._middleware = (TurnHygiene(self.server), *middleware)
        self._checkpointer = checkpointer
        self._graph = None

    async def graph(self):
        if self._graph is None:
            saver = await self._checkpointer()
            if self._graph is None:
                self._graph = build_agent_graph(self._model, self._catalog, saver, self._middleware)
        return self._graph


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolStarted:
    call_id: str
    name: str
    args: dict


@dataclass(frozen=True)
class ToolFinished:
    call_id: str
    name: str
    result: str
    duration: float


@dataclass(frozen=True)
class AnswerCut:
    reason: str  # "length": the output limit; "server": the stream ended without a finish reason


@dataclass(frozen=True)
class HistoryTrimmed:
    dropped: int  # earliest messages the model no longer sees


@dataclass(frozen=True)
class ToolsOff:
    """The server rejected tools: from now on the app runs without them (the cart is unavailable)."""


TurnEvent = Union[TextDelta, ToolStarted, ToolFinished, AnswerCut, HistoryTrimmed, ToolsOff]


def _tool_messages(update) -> list[ToolMessage]:
    """ToolMessages from a ``tools`` node update (a dict, or a list of dicts for Command updates)."""
    updates = update if isinstance(update, list) else [update]
    found = []
    for item in updates:
        if isinstance(item, dict):
            found += [m for m in item.get("messages", []) if isinstance(m, ToolMessage)]
    return found


class CmwAgent:
    """One per session: which conversation this session is in, and its turns on the shared graph.

    The agent owns its current conversation: opening, switching, starting and rehydrating one are its
    methods, and nothing else swaps it. The graph (model, tools, checkpointer) is shared and read-only;
    entries come from the shared :class:`~memory.conversation_memory.ConversationMemoryManager`.
    """

    def __init__(self, manager: ConversationMemoryManager, principal: str | None = None):
        self._manager = manager
        self.conversation: ConversationMemory = manager.entry(principal=principal)
        self._rehydrated = False

    @property
    def files(self):
        """The shared file store (every call names owner and conversation; see agent/context.py)."""
        return self._manager.files

    async def rehydrate(self, principal: str, session_fingerprint: str) -> None:
        """Once: continue the conversation this session last used, if the store has one (after TTL or
        size eviction, the next request picks up exactly where the user left off)."""
        if self._rehydrated:
            return
        self._rehydrated = True
        self.conversation.principal = self.conversation.principal or principal
        entry = await self._manager.last_entry_of_session(principal, session_fingerprint)
        if entry is not None:
            self.conversation = entry

    async def open(self, conversation_id: str, principal: str) -> bool:
        """Switch to a stored conversation of ``principal``; False (and no switch) for anyone else's."""
        if conversation_id == self.conversation.conversation_id and not self.conversation.deleted:
            return True
        entry = await self._manager.owned_entry(conversation_id, principal)
        if entry is None:
            return False
        self.conversation, self._rehydrated = entry, True
        return True

    async def open_latest(self, principal: str) -> bool:
        """Continue ``principal``'s most recently updated conversation, if there is one."""
        entry = await self._manager.latest_entry_of_owner(principal)
        if entry is None:
            return False
        self.conversation, self._rehydrated = entry, True
        return True

    def start_new(self, principal: str) -> ConversationMemory:
        """Leave the current conversation (it stays stored) and begin an empty one."""
        self.conversation, self._rehydrated = self._manager.entry(principal=principal), True
        return self.conversation

    def current(self, principal: str) -> ConversationMemory:
        """The conversation the next turn runs in: a deleted one is replaced by a new, empty one."""
        return self.start_new(principal) if self.conversation.deleted else self.conversation

    @asynccontextmanager
    async def locked_current(self, principal: str) -> AsyncIterator[ConversationMemory]:
        """The current conversation, locked (``ConversationMemory.locked``: with several workers, its lease
        too); one deleted while we waited is replaced by a new one."""
        while True:
            conversation = self.current(principal)
            async with conversation.locked():
                if not conversation.deleted and conversation is self.conversation:
                    yield conversation
                    return

    async def stream_turn(self, conversation: ConversationMemory, text: str, context: TurnContext,
                          message_id: str | None = None) -> AsyncIterator[TurnEvent]:
        """Run one user turn of ``conversation`` (the caller holds its lock), yielding text deltas, tool
        start/finish events and notes (a cut answer, trimmed history) as they happen. ``message_id`` names
        the stored user message, so an interrupted turn can be found afterwards.

        A server that rejects ``tools`` is remembered (process-wide) and the turn runs again without them,
        once, if nothing was shown yet; the re-run replaces the stored user message (same id)."""
        server = self._manager.runtime.server
        for attempt in (1, 2):
            shown = False
            try:
                async for event in self._run(conversation, text, context, message_id):
                    shown = True
                    yield event
                return
            except Exception as error:
                if not shown:
                    await self._learn_window(conversation, error)
                if attempt == 2 or shown or not server.tools or not is_tools_rejection(error):
                    raise
                log.warning("the model server rejects tools (%s); running without tools from now on", error)
                server.tools = False
                yield ToolsOff()

    async def _learn_window(self, conversation: ConversationMemory, error: BaseException) -> None:
        """A request refused as too long (or a stream that ended empty, llama-cpp-python's way of saying
        so) teaches the server's window when it was unknown: the next turn's history is trimmed below it."""
        failure = model_failure(error)
        if failure is None or failure.kind not in ("context", "empty"):
            return
        server = self._manager.runtime.server
        messages = consistent((await conversation.load()).messages)
        sent = count_tokens_approximately(within_budget(messages, server.history_budget))
        if server.refused(sent):
            log.warning("the model server refused about %d tokens of history; keeping history under %d tokens "
                        "from now on (set CMW_CONTEXT_TOKENS to the server's window)", sent, server.history_budget)

    async def _run(self, conversation: ConversationMemory, text: str, context: TurnContext,
                   message_id: str | None) -> AsyncIterator[TurnEvent]:
        started: dict[str, tuple[str, float]] = {}
        graph = await self._manager.runtime.graph()
        # The person's message is stored (committed) before the model is asked: with the graph's input the
        # checkpoint holding it is written in the background while the first tokens stream, so a worker
        # killed early in an answer could lose the message itself. Then the graph runs on from it.
        await graph.aupdate_state(conversation.config, {"messages": [HumanMessage(content=text, id=message_id)]},
                                  as_node=START)
        async for mode, data in graph.astream(None, conversation.config, context=context,
                                              stream_mode=["messages", "updates", "custom"]):
            if mode == "messages":
                chunk, meta = data
                if isinstance(chunk, AIMessageChunk) and meta.get("langgraph_node") == "model" and chunk.text:
                    yield TextDelta(chunk.text)
            elif mode == "custom":
                if isinstance(data, dict) and data.get("cmw") == "trimmed":
                    yield HistoryTrimmed(int(data.get("dropped", 0)))
            elif mode == "updates":
                for node, update in data.items():
                    if node == "model" and isinstance(update, dict):
                        for message in update.get("messages", []):
                            if isinstance(message, AIMessage):
                                for event in _answer_events(message, started):
                                    yield event
                    elif node == "tools":
                        for message in _tool_messages(update):
                            name, t0 = started.pop(message.tool_call_id, (message.name or "tool", time.monotonic()))
                            yield ToolFinished(message.tool_call_id, name, message.text, time.monotonic() - t0)


def _answer_events(message: AIMessage, started: dict) -> list[TurnEvent]:
    """Tool starts, a cut, or a malformed tool call (raised: nothing was run) for one model answer."""
    if message.invalid_tool_calls and not message.tool_calls and not message.text:
        raise MalformedToolCall(f"unreadable tool call(s): {message.invalid_tool_calls!r}")
    events: list[TurnEvent] = []
    for call in message.tool_calls:
        started[call["id"]] = (call["name"], time.monotonic())
        events.append(ToolStarted(call["id"], call["name"], dict(call["args"])))
    reason = cut_reason(message)
    if reason:
        events.append(AnswerCut(reason))
    return events
