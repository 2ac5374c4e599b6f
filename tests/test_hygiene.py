"""What the model is sent of a stored conversation (agent/hygiene.py): pure functions on messages."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from agent.hygiene import ModelServer, consistent, cut_reason, is_notice, notice_message, within_budget
from agent.model_errors import SENTENCES, Failure


def call(call_id: str, name: str = "add_to_cart") -> dict:
    return {"id": call_id, "name": name, "args": {"item": "apples"}, "type": "tool_call"}


def test_a_poisoned_conversation_reaches_the_model_healed():
    """What the issue saw stored after one failed turn: a malformed, unanswered tool call and an error
    reply. The model gets neither; the person's words and real answers stay."""
    notice = notice_message(Failure("server_error", SENTENCES["server_error"]))
    stored = [
        HumanMessage("My name is Alice", id="h1"), AIMessage("Hi Alice", id="a1"),
        HumanMessage("Add 2 apples to my cart", id="h2"),
        AIMessage("Let me add them.", id="a2", tool_calls=[call("c1", "add_to_cartadd_to_cart")]),
        notice,
        ToolMessage("orphan result", tool_call_id="c-unknown", id="t0"),
        HumanMessage("Hello", id="h3"),
    ]
    sent = consistent(stored)
    assert [(type(m).__name__, m.text) for m in sent] == [
        ("HumanMessage", "My name is Alice"), ("AIMessage", "Hi Alice"), ("HumanMessage", "Add 2 apples to my cart"),
        ("AIMessage", "Let me add them."), ("HumanMessage", "Hello")]
    assert not sent[3].tool_calls and is_notice(notice) and not any(is_notice(m) for m in sent)


def test_answered_tool_calls_stay():
    turn = [HumanMessage("Add 2 apples to my cart"), AIMessage("", tool_calls=[call("c1")]),
            ToolMessage("Added 2 × Apples", tool_call_id="c1"), AIMessage("Done")]
    assert consistent(turn) == turn


def test_the_budget_keeps_whole_newest_turns_and_at_least_the_last():
    turns = []
    for n in range(10):
        turns += [HumanMessage(f"question {n} " + "word " * 100), AIMessage(f"answer {n} " + "word " * 100)]
    kept = within_budget(turns, 400)
    assert kept == turns[-len(kept):] and isinstance(kept[0], HumanMessage) and 2 <= len(kept) < len(turns)
    assert within_budget(turns, 10) == turns[-2:]  # the last turn alone is over: it is sent anyway
    assert within_budget(turns[:2], 10_000) == turns[:2]
    assert ModelServer(context_tokens=4096, max_output_tokens=1024).history_budget == int((4096 - 1024 - 700) * 0.85)


def test_cut_reasons():
    assert cut_reason(AIMessage("partial", response_metadata={"finish_reason": "length"})) == "length"
    assert cut_reason(AIMessage("partial", response_metadata={})) == "server"
    assert cut_reason(AIMessage("whole", response_metadata={"finish_reason": "stop"})) is None
    assert cut_reason(AIMessage("", tool_calls=[call("c1")], response_metadata={})) is None


def test_unfinished_turns_are_those_a_stopped_worker_leaves():
    from agent.hygiene import INTERRUPTED, unfinished, upload_note

    asked = [HumanMessage("My name is Alice"), AIMessage("Hi Alice"), HumanMessage("Add 2 apples to my cart")]
    called = asked + [AIMessage("", tool_calls=[call("c1")])]
    ran = called + [ToolMessage("Added 2 × Apples", tool_call_id="c1")]
    assert unfinished(asked) and unfinished(called) and unfinished(ran)
    assert not unfinished(ran + [AIMessage("Done")])
    assert not unfinished(asked + [AIMessage("Hal", response_metadata={"stopped": True})])
    assert not unfinished(asked + [notice_message(INTERRUPTED)])
    assert not unfinished(asked[:2] + [upload_note("a.csv", "1 KB", "3 rows")])
    assert not unfinished([])
    assert INTERRUPTED.kind == "interrupted" and "send your message again" in INTERRUPTED.sentence
