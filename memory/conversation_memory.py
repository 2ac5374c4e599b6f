"""ConversationMemoryManager: per-conversation memory entries over a LangGraph checkpointer.

Each conversation is one checkpointer thread, named by a server-made id (never the session_hash). The
manager is shared; it reaches the compiled graph (read-only) whose checkpointer stores every thread, and
the :class:`~memory.store.ConversationStore` that lists conversations per owner. The storage behind
it - SQLite or PostgreSQL - never shows in the UI.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, RemoveMessage, ToolMessage
from langgraph.graph.message import REMOVE_ALL_MESSAGES

from agent.cart import Cart, apply_cart_ops
from memory.store import ConversationStore


@dataclass
class Transcript:
    messages: list[BaseMessage] = field(default_factory=list)
    cart: Cart = field(default_factory=dict)

    @property
    def turn_count(self) -> int:
        return sum(1 for m in self.messages if isinstance(m, HumanMessage))


def replay_cart(messages: list[BaseMessage]) -> Cart:
    """The cart that the tool results in ``messages`` produce, in order (used when turns are dropped)."""
    ops = [m.artifact["cart_op"] for m in messages
           if isinstance(m, ToolMessage) and isinstance(m.artifact, dict) and m.artifact.get("cart_op")]
    return apply_cart_ops({}, ops)


def _answered_tool_calls(messages: list[BaseMessage]) -> list[BaseMessage]:
    """Drop AI tool-call messages whose calls never got a result (a turn stopped mid-tool)."""
    answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    return [m for m in messages
            if not (isinstance(m, AIMessage) and m.tool_calls
                    and not all(c["id"] in answered for c in m.tool_calls))]


class ConversationMemory:
    """The memory entry of one conversation: load it, rewrite it, drop its last turn."""

    def __init__(self, runtime: Any, conversation_id: str):
        self._runtime = runtime
        self.conversation_id = conversation_id
        self.config = {"configurable": {"thread_id": conversation_id}}
        self.turn_lock = asyncio.Lock()  # turns of one conversation run one at a time, whichever tab sends them

    async def load(self) -> Transcript:
        graph = await self._runtime.graph()
        snapshot = await graph.aget_state(self.config)
        values = snapshot.values or {}
        return Transcript(list(values.get("messages", [])), dict(values.get("cart") or {}))

    async def replace(self, messages: list[BaseMessage], cart: Cart | None = None) -> None:
        update: dict[str, Any] = {"messages": [RemoveMessage(id=REMOVE_ALL_MESSAGES), *messages]}
        if cart is not None:
            update["cart"] = {"op": "replace", "cart": cart}
        graph = await self._runtime.graph()
        await graph.aupdate_state(self.config, update, as_node="model")

    async def drop_last_turn(self) -> str | None:
        """Forget the last user turn and everything after it (cart included). Returns its text."""
        transcript = await self.load()
        starts = [i for i, m in enumerate(transcript.messages) if isinstance(m, HumanMessage)]
        if not starts:
            return None
        kept = transcript.messages[: starts[-1]]
        await self.replace(kept, replay_cart(kept))
        return transcript.messages[starts[-1]].text

    async def truncate_to_turns(self, turns: int) -> None:
        """Keep only the first ``turns`` user turns (used to reconcile with what the user sees)."""
        transcript = await self.load()
        starts = [i for i, m in enumerate(transcript.messages) if isinstance(m, HumanMessage)]
        if len(starts) <= turns:
            return
        kept = transcript.messages[: starts[turns]]
        await self.replace(kept, replay_cart(kept))

    async def settle_interrupted_turn(self, user_text: str, message_id: str, visible_answer: str) -> None:
        """After Stop or an error: make memory hold exactly what the user saw of that turn."""
        transcript = await self.load()
        starts = [i for i, m in enumerate(transcript.messages) if isinstance(m, HumanMessage) and m.id == message_id]
        if starts:
            head, turn = transcript.messages[: starts[0]], transcript.messages[starts[0]:]
        else:  # the turn's input was never stored
            head, turn = transcript.messages, [HumanMessage(content=user_text, id=message_id)]
        turn = _answered_tool_calls(turn)
        if turn and isinstance(turn[-1], AIMessage) and not turn[-1].tool_calls:
            turn = turn[:-1]  # a stored final answer is replaced by the part that was shown
        if visible_answer:
            turn.append(AIMessage(content=visible_answer, response_metadata={"stopped": True}))
        await self.replace(head + turn, replay_cart(head + turn))


class ConversationMemoryManager:
    """Hands out memory entries and manages an owner's conversations. Shared; holds no per-user data."""

    def __init__(self, runtime: Any, store: ConversationStore):
        self.runtime = runtime
        self.store = store
        # One live entry per conversation, so two tabs on one conversation share its turn lock. Weak: an
        # entry disappears as soon as no session uses it. Holds no conversation data.
        self._live: weakref.WeakValueDictionary[str, ConversationMemory] = weakref.WeakValueDictionary()

    @staticmethod
    def new_conversation_id() -> str:
        return uuid.uuid4().hex

    def entry(self, conversation_id: str | None = None) -> ConversationMemory:
        conversation_id = conversation_id or self.new_conversation_id()
        entry = self._live.get(conversation_id)
        if entry is None:
            entry = self._live[conversation_id] = ConversationMemory(self.runtime, conversation_id)
        return entry

    async def owned_entry(self, conversation_id: str, owner: str) -> ConversationMemory | None:
        """The entry for a stored conversation of ``owner``; None for anyone else's or an unknown id."""
        if not conversation_id or not owner:
            return None
        record = await self.store.get(conversation_id, owner)
        return self.entry(record.id) if record else None

    async def latest_entry_of_owner(self, owner: str) -> ConversationMemory | None:
        records = await self.store.list_for_owner(owner) if owner else []
        return self.entry(records[0].id) if records else None

    async def last_entry_of_session(self, owner: str, session_fingerprint: str) -> ConversationMemory | None:
        record = await self.store.latest_for_session(owner, session_fingerprint)
        return self.entry(record.id) if record else None
