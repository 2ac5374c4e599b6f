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
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, RemoveMessage, ToolMessage
from langgraph.graph.message import REMOVE_ALL_MESSAGES

from agent.cart import Cart, apply_cart_ops
from agent.hygiene import INTERRUPTED, consistent, is_turn_start, notice_message, unfinished, upload_of
from memory.file_store import FileStore
from memory.leases import Lease, Leases, conversation_lease
from memory.store import ConversationRecord, ConversationStore
from memory.turn import TurnHandle


@dataclass
class Transcript:
    messages: list[BaseMessage] = field(default_factory=list)
    cart: Cart = field(default_factory=dict)

    @property
    def turn_count(self) -> int:
        return sum(1 for m in self.messages if is_turn_start(m))


def replay_cart(messages: list[BaseMessage]) -> Cart:
    """The cart that the tool results in ``messages`` produce, in order (used when turns are dropped)."""
    ops = [m.artifact["cart_op"] for m in messages
           if isinstance(m, ToolMessage) and isinstance(m.artifact, dict) and m.artifact.get("cart_op")]
    return apply_cart_ops({}, ops)


class ConversationMemory:
    """The memory entry of one conversation: load it, rewrite it, drop its last turn.

    :meth:`locked` is the conversation's one lock: every read-modify-write of it - a turn, settling a
    stopped turn, undo, retry, rename, delete, export - holds it, whichever tab or caller asks. It is
    ``lock`` (this process) and, with several workers, the conversation's lease (memory/leases.py: no other
    worker holds it meanwhile). ``deleted`` is set before a delete takes the lock; after that nothing
    writes to this conversation. ``running`` is the cancel handle of the turn that holds the lock, so a
    delete can stop it.
    """

    def __init__(self, runtime: Any, conversation_id: str, leases: Leases | None = None):
        self._runtime = runtime
        self._leases = leases
        self.conversation_id = conversation_id
        self.config = {"configurable": {"thread_id": conversation_id}}
        self.lock = asyncio.Lock()
        self.deleted = False
        self.principal: str | None = None  # whose conversation this is, once known (opened or first turn)
        self.stored = False  # known to have its row in the store (opened from it, or a turn recorded)
        self.running: TurnHandle | None = None

    @asynccontextmanager
    async def locked(self) -> AsyncIterator["ConversationMemory"]:
        """Hold this conversation for a read-modify-write. One worker: ``lock``, nothing else. Several:
        ``lock``, then the lease (waiting while another worker holds it); then a conversation another
        worker deleted meanwhile is marked ``deleted`` here too, and a turn that a stopped worker left
        half-done is settled (:meth:`settle_abandoned_turn`)."""
        async with self.lock:
            if self._leases is None:
                yield self
                return
            async with self._leases.hold(conversation_lease(self.conversation_id)) as lease:
                if self.stored and self.principal and not self.deleted and \
                        await self._leases.store.get(self.conversation_id, self.principal) is None:
                    self.deleted = True  # deleted by another worker: nothing may write it again
                await self._settle_if_taken_over(lease)
                yield self

    async def settle_if_abandoned(self) -> bool:
        """Before showing the conversation (several workers): settle a turn left half-done by a worker that
        stopped, if its lease has expired and nobody holds the conversation now; whether a turn was settled.
        One read when nothing is to be done; nothing at all with one worker."""
        name = conversation_lease(self.conversation_id)
        if self._leases is None or self.lock.locked():
            return False
        if not await self._leases.abandoned(name) or self.lock.locked():  # (a turn here began meanwhile)
            return False
        async with self.lock:
            async with self._leases.try_hold(name) as lease:
                return await self._settle_if_taken_over(lease)

    async def cut_short_elsewhere(self, messages: list[BaseMessage]) -> bool:
        """Whether ``messages`` (this conversation, as just loaded) end in a turn another worker was answering
        and still holds or held until it stopped: the person's reply stream broke with that worker. Never
        with one worker."""
        return (self._leases is not None and not self.lock.locked() and unfinished(messages)
                and await self._leases.held_by_another(conversation_lease(self.conversation_id)))

    async def _settle_if_taken_over(self, lease: Lease | None) -> bool:
        if lease is not None and lease.taken_from is not None:
            return await self.settle_abandoned_turn()
        return False

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

    async def append_tool_action(self, name: str, args: dict, text: str, cart_op: dict | None, note: str) -> None:
        """Record a cart action made outside a chat turn (an assistant over MCP) as the chat tools record
        theirs: a tool call, its result carrying the cart operation (so Undo/Retry replay it), and a short
        visible note. The graph is left with nothing pending."""
        call_id = f"mcp_{uuid.uuid4().hex}"
        messages = [AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}],
                              response_metadata={"source": "mcp"}),
                    ToolMessage(content=text, tool_call_id=call_id, name=name,
                                artifact={"cart_op": cart_op} if cart_op else None),
                    AIMessage(content=note, response_metadata={"source": "mcp"})]
        update: dict[str, Any] = {"messages": messages}
        if cart_op:
            update["cart"] = cart_op
        graph = await self._runtime.graph()
        await graph.aupdate_state(self.config, update, as_node="model")

    async def append_upload(self, note: HumanMessage) -> None:
        """Record an attached file (see agent/hygiene.py ``upload_note``); caller holds the lock."""
        graph = await self._runtime.graph()
        await graph.aupdate_state(self.config, {"messages": [note]}, as_node="model")

    async def drop_last_turn(self) -> str | None:
        """Forget the last user turn and everything after it (cart included), except files attached since
        (they stay attached). Returns its text."""
        transcript = await self.load()
        starts = [i for i, m in enumerate(transcript.messages) if is_turn_start(m)]
        if not starts:
            return None
        later_uploads = [m for m in transcript.messages[starts[-1]:] if upload_of(m)]
        kept = transcript.messages[: starts[-1]] + later_uploads
        await self.replace(kept, replay_cart(kept))
        return transcript.messages[starts[-1]].text

    async def settle_abandoned_turn(self) -> bool:
        """A turn that another worker left half-done when it stopped (found under the lease it let expire):
        keep the person's message and the tool calls that finished (their cart changes happened), drop a
        call without its result, and add the "interrupted" notice (shown and exported, never sent to the
        model). A conversation whose last turn finished is left as it is. True when it was settled."""
        if self.deleted:
            return False
        messages = (await self.load()).messages
        if not unfinished(messages):
            return False
        starts = [i for i, m in enumerate(messages) if is_turn_start(m)]
        head, turn = messages[: starts[-1] if starts else 0], messages[starts[-1] if starts else 0:]
        kept = head + consistent(turn) + [notice_message(INTERRUPTED)]
        await self.replace(kept, replay_cart(kept))
        return True

    async def settle_interrupted_turn(self, user_text: str, message_id: str, visible_answer: str,
                                      notice: AIMessage | None = None) -> None:
        """After Stop or an error: make memory hold exactly what the user saw of that turn (nothing at all
        once the conversation was deleted). No tool call without its result, no unreadable call, no
        reply that was not shown; the part that was shown is marked as stopped, and a failure's ``notice``
        (see agent/hygiene.py) follows it, shown and exported but never sent to the model."""
        if self.deleted:
            return
        transcript = await self.load()
        starts = [i for i, m in enumerate(transcript.messages) if isinstance(m, HumanMessage) and m.id == message_id]
        if starts:
            head, turn = transcript.messages[: starts[0]], transcript.messages[starts[0]:]
        else:  # the turn's input was never stored
            head, turn = transcript.messages, [HumanMessage(content=user_text, id=message_id)]
        turn = consistent(turn)
        if turn and isinstance(turn[-1], AIMessage) and not turn[-1].tool_calls:
            turn = turn[:-1]  # a stored final answer is replaced by the part that was shown
        if visible_answer:
            turn.append(AIMessage(content=visible_answer, response_metadata={"stopped": True}))
        if notice is not None:
            turn.append(notice)
        await self.replace(head + turn, replay_cart(head + turn))


class ConversationMemoryManager:
    """Hands out memory entries and manages an owner's conversations. Shared; holds no per-user data.

    Every store access of the app goes through here, and every change of a conversation takes that
    conversation's lock.
    """

    def __init__(self, runtime: Any, store: ConversationStore, leases: Leases | None = None):
        self.runtime = runtime
        self.store = store
        self.leases = leases  # several workers on this store (memory/leases.py); None with one
        self.files = FileStore(store)  # people's uploaded files, in the same database
        # One live entry per conversation, so every tab on one conversation shares its lock. Weak: an
        # entry disappears as soon as no session uses it. Holds no conversation data.
        self._live: weakref.WeakValueDictionary[str, ConversationMemory] = weakref.WeakValueDictionary()

    @staticmethod
    def new_conversation_id() -> str:
        return uuid.uuid4().hex

    def entry(self, conversation_id: str | None = None, principal: str | None = None, *,
              stored: bool = False) -> ConversationMemory:
        """The live entry of a conversation (a new id when None); ``stored``: read from the store just now."""
        conversation_id = conversation_id or self.new_conversation_id()
        entry = self._live.get(conversation_id)
        if entry is None:
            entry = self._live[conversation_id] = ConversationMemory(self.runtime, conversation_id, self.leases)
        entry.principal = entry.principal or principal
        entry.stored = entry.stored or stored
        return entry

    async def owned_entry(self, conversation_id: str, principal: str) -> ConversationMemory | None:
        """The entry for a stored conversation of ``principal``; None for anyone else's or an unknown id."""
        if not conversation_id or not principal:
            return None
        record = await self.store.get(conversation_id, principal)
        return self.entry(record.id, principal, stored=True) if record else None

    async def latest_entry_of_owner(self, principal: str) -> ConversationMemory | None:
        records = await self.store.list_for_owner(principal) if principal else []
        return self.entry(records[0].id, principal, stored=True) if records else None

    async def last_entry_of_session(self, principal: str, session_fingerprint: str) -> ConversationMemory | None:
        record = await self.store.latest_for_session(principal, session_fingerprint)
        return self.entry(record.id, principal, stored=True) if record else None

    async def record_turn(self, entry: ConversationMemory, principal: str, session_fingerprint: str,
                          text: str) -> bool:
        """Note a turn of ``entry`` (caller holds its lock). False: the id is someone else's - run nothing."""
        if entry.deleted:
            return False
        entry.principal = entry.principal or principal
        recorded = entry.principal == principal and await self.store.record_turn(
            entry.conversation_id, principal, session_fingerprint, text)
        entry.stored = entry.stored or recorded
        return recorded

    async def note_activity(self, entry: ConversationMemory, principal: str) -> bool:
        """Note a change that is not a chat turn (an assistant over MCP; caller holds the lock): only the
        conversation's ``updated_at``. False when it was deleted or is not ``principal``'s."""
        return not entry.deleted and await self.store.touch(entry.conversation_id, principal)

    async def conversations(self, principal: str) -> list[ConversationRecord]:
        return await self.store.list_for_owner(principal)

    async def rename(self, conversation_id: str, principal: str, title: str) -> bool:
        entry = await self.owned_entry(conversation_id, principal)
        if entry is None:
            return False
        async with entry.locked():
            return await self.store.rename(conversation_id, principal, title)

    async def delete(self, conversation_id: str, principal: str) -> bool:
        """Delete one conversation of ``principal``: its running turn is stopped and writes nothing, then
        its row and checkpoints go, under its lock."""
        entry = await self.owned_entry(conversation_id, principal)
        if entry is None:
            return False
        return await self._delete_entry(entry, principal)

    async def delete_owner(self, principal: str) -> int:
        """Delete every conversation of ``principal``, stored or live (a first turn not yet recorded
        included). Returns how many stored ones were deleted."""
        entries = {r.id: self.entry(r.id, principal) for r in await self.store.list_for_owner(principal)}
        entries.update({e.conversation_id: e for e in list(self._live.values()) if e.principal == principal})
        deleted = [await self._delete_entry(entry, principal) for entry in entries.values()]
        await self.store.delete_tokens(principal)  # assistant tokens (MCP) die with everything else
        await self.files.delete_owner(principal)  # and every file, of any conversation
        return sum(deleted)

    async def expire_untouched_since(self, cutoff: float) -> int:
        """Retention: delete conversations last updated before ``cutoff``, each under its lock and only if
        still untouched then (a turn that just ran in one keeps it)."""
        deleted = 0
        for record in await self.store.untouched_since(cutoff):
            entry = self.entry(record.id, record.owner)
            async with entry.locked():
                current = await self.store.get(record.id, record.owner)
                if current is None or current.updated_at >= cutoff:
                    continue
                entry.deleted = True
                deleted += await self.store.delete(record.id, record.owner)
                await self.files.delete_conversation(record.owner, record.id)
        return deleted

    async def _delete_entry(self, entry: ConversationMemory, principal: str) -> bool:
        entry.deleted = True
        if entry.running is not None:
            entry.running.cancel()
        async with entry.locked():
            deleted = await self.store.delete(entry.conversation_id, principal)
            if not deleted and entry.principal == principal:
                await self.store.delete_checkpoints(entry.conversation_id)  # a first turn, not yet recorded
            await self.files.delete_conversation(principal, entry.conversation_id)
        return deleted
