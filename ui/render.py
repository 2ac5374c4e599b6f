"""Turn agent messages and turn events into Gradio chat messages (pure functions, no state)."""

from __future__ import annotations

import json
import re

import gradio as gr
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from agent.cmw_agent import TextDelta, ToolFinished, ToolStarted, TurnEvent


# Markdown (and the HTML it lets through) has no say over what a person typed: every character that could
# start markup is backslash-escaped, and leading spaces cannot make a code block.
_MARKUP = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&$=:])")
_LEADING_SPACE = re.compile(r"^[ \t]+", re.MULTILINE)
STOPPED_NOTE = "_(answer stopped here)_"


def literal(text: str) -> str:
    """Markdown that shows ``text`` exactly as typed: no HTML, no formatting, no links, no LaTeX."""
    escaped = _MARKUP.sub(r"\\\1", text)
    return _LEADING_SPACE.sub(lambda m: "&nbsp;" * len(m.group(0).expandtabs(4)), escaped)


def tool_title(name: str) -> str:
    return f"Tool: {name.replace('_', ' ')}"


def user_message(text: str) -> gr.ChatMessage:
    return gr.ChatMessage(role="user", content=literal(text))


def failure_message_bubble(sentence: str) -> gr.ChatMessage:
    """A failure told in the chat: its own message, never part of an answer, never stored."""
    return gr.ChatMessage(role="assistant", content=f"**Could not answer.** {sentence}")


def _args_block(args: dict) -> str:
    return f"```json\n{json.dumps(args, ensure_ascii=False)}\n```" if args else ""


def render_transcript(messages: list[BaseMessage]) -> list[gr.ChatMessage]:
    """The chat the user should see for a stored conversation."""
    results = {m.tool_call_id: m.text for m in messages if isinstance(m, ToolMessage)}
    shown: list[gr.ChatMessage] = []
    for message in messages:
        if isinstance(message, HumanMessage):
            shown.append(user_message(message.text))
        elif isinstance(message, AIMessage):
            for call in message.tool_calls:
                shown.append(gr.ChatMessage(
                    role="assistant", content=results.get(call["id"], _args_block(call["args"])),
                    metadata={"title": tool_title(call["name"]), "id": call["id"], "status": "done"}))
            if message.text:
                stopped = (message.response_metadata or {}).get("stopped")
                shown.append(gr.ChatMessage(role="assistant",
                                            content=message.text + (f"\n\n{STOPPED_NOTE}" if stopped else "")))
    return shown


def transcript_records(messages: list[BaseMessage]) -> list[dict]:
    """A stored conversation as plain ``{"role", "content"}`` records (for the API): the text as typed."""
    records = []
    for message in messages:
        if isinstance(message, HumanMessage):
            records.append({"role": "user", "content": message.text})
        elif isinstance(message, AIMessage) and message.text:
            records.append({"role": "assistant", "content": message.text})
    return records


class TurnView:
    """The visible messages of the turn being streamed; rebuilt per turn, owned by that turn only."""

    def __init__(self) -> None:
        self.messages: list[gr.ChatMessage] = []
        self._bubbles: dict[str, gr.ChatMessage] = {}
        self._text: gr.ChatMessage | None = None
        self.answer = ""  # the text answer shown so far
        self.refusal: str | None = None  # the turn was not run (busy): why
        self.failure: str | None = None  # the turn failed: the sentence shown for it

    def apply(self, event: TurnEvent) -> None:
        if isinstance(event, TextDelta):
            if self._text is None:
                self._text = gr.ChatMessage(role="assistant", content="")
                self.messages.append(self._text)
            self._text.content += event.text
            self.answer += event.text
        elif isinstance(event, ToolStarted):
            bubble = gr.ChatMessage(role="assistant", content=_args_block(event.args),
                                    metadata={"title": tool_title(event.name), "id": event.call_id,
                                              "status": "pending"})
            self._bubbles[event.call_id] = bubble
            self.messages.append(bubble)
            self._text = None
        elif isinstance(event, ToolFinished):
            bubble = self._bubbles.get(event.call_id)
            if bubble is not None:
                bubble.content = event.result
                bubble.metadata = {**bubble.metadata, "status": "done", "duration": round(event.duration, 3)}

    def mark_stopped(self) -> None:
        """The answer was cut short (Stop, an error, the tab closed): say so under what was shown."""
        if self._text is not None and self.answer:
            self._text.content = self.answer + f"\n\n{STOPPED_NOTE}"

    def apply_failure(self, sentence: str) -> None:
        self.failure = sentence
        self.mark_stopped()
        self.messages.append(failure_message_bubble(sentence))
        self._text = None
