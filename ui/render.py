"""Turn agent messages and turn events into Gradio chat messages (pure functions, no state)."""

from __future__ import annotations

import json

import gradio as gr
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from agent.cmw_agent import TextDelta, ToolFinished, ToolStarted, TurnEvent


def tool_title(name: str) -> str:
    return f"🛠️ {name.replace('_', ' ')}"


def _args_block(args: dict) -> str:
    return f"```json\n{json.dumps(args, ensure_ascii=False)}\n```" if args else ""


def render_transcript(messages: list[BaseMessage]) -> list[gr.ChatMessage]:
    """The chat the user should see for a stored conversation."""
    results = {m.tool_call_id: m.text for m in messages if isinstance(m, ToolMessage)}
    shown: list[gr.ChatMessage] = []
    for message in messages:
        if isinstance(message, HumanMessage):
            shown.append(gr.ChatMessage(role="user", content=message.text))
        elif isinstance(message, AIMessage):
            for call in message.tool_calls:
                shown.append(gr.ChatMessage(
                    role="assistant", content=results.get(call["id"], _args_block(call["args"])),
                    metadata={"title": tool_title(call["name"]), "id": call["id"], "status": "done"}))
            if message.text:
                shown.append(gr.ChatMessage(role="assistant", content=message.text))
    return shown


class TurnView:
    """The visible messages of the turn being streamed; rebuilt per turn, owned by that turn only."""

    def __init__(self) -> None:
        self.messages: list[gr.ChatMessage] = []
        self._bubbles: dict[str, gr.ChatMessage] = {}
        self._text: gr.ChatMessage | None = None
        self.answer = ""  # the text answer shown so far

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

    def apply_error(self, message: str) -> None:
        self.apply(TextDelta(("\n\n" if self.answer else "") + message))
