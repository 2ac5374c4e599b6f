"""Turn agent messages and turn events into Gradio chat messages (pure functions, no state)."""

from __future__ import annotations

import json
import re
from types import MappingProxyType

import gradio as gr
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from agent.cmw_agent import AnswerCut, HistoryTrimmed, TextDelta, ToolFinished, ToolsOff, ToolStarted, TurnEvent
from agent.hygiene import cut_of, is_notice, upload_of


# Markdown (and the HTML it lets through) has no say over what a person typed: every character that could
# start markup is backslash-escaped, and leading spaces cannot make a code block.
_MARKUP = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&$=:])")
_LEADING_SPACE = re.compile(r"^[ \t]+", re.MULTILINE)
STOPPED_NOTE = "_(answer stopped here)_"
# How an answer that did not finish is marked under its text (on screen, on reload, in exports).
CUT_NOTES = MappingProxyType({
    "stopped": STOPPED_NOTE,
    "length": "_(answer cut off at the length limit)_",
    "server": "_(the model server ended this answer early; it may be incomplete)_",
})
TOOLS_OFF_NOTE = ("The model server does not accept tools, so the cart is unavailable; this answer was made "
                  "without them.")


def trimmed_note(dropped: int) -> str:
    return (f"This conversation is longer than the model can take in: its {dropped} earliest message(s) "
            "are no longer in the model's view.")


def literal(text: str) -> str:
    """Markdown that shows ``text`` exactly as typed: no HTML, no formatting, no links, no LaTeX."""
    escaped = _MARKUP.sub(r"\\\1", text)
    return _LEADING_SPACE.sub(lambda m: "&nbsp;" * len(m.group(0).expandtabs(4)), escaped)


def tool_title(name: str) -> str:
    return f"Tool: {name.replace('_', ' ')}"


def user_message(text: str) -> gr.ChatMessage:
    return gr.ChatMessage(role="user", content=literal(text))


def file_bubble(upload: dict) -> gr.ChatMessage:
    """An attached file in the chat: its name, size and one-line summary (never a link: files are not served)."""
    return gr.ChatMessage(role="user", content=f"Attached **{literal(str(upload.get('name', '')))}** · "
                                               f"{literal(str(upload.get('size', '')))} · "
                                               f"{literal(str(upload.get('summary', '')))}")


def failure_message_bubble(sentence: str) -> gr.ChatMessage:
    """A failure told in the chat: its own message, never part of an answer. Stored as a notice that the
    model never sees (agent/hygiene.py), so a reload shows it the same way."""
    return gr.ChatMessage(role="assistant", content=f"**Could not answer.** {sentence}")


def info_bubble(text: str) -> gr.ChatMessage:
    """What the app says about a turn (trimmed history, no tools): shown with the turn, not stored."""
    return gr.ChatMessage(role="assistant", content=f"_{text}_")


def _args_block(args: dict) -> str:
    return f"```json\n{json.dumps(args, ensure_ascii=False)}\n```" if args else ""


def render_transcript(messages: list[BaseMessage]) -> list[gr.ChatMessage]:
    """The chat the user should see for a stored conversation."""
    results = {m.tool_call_id: m.text for m in messages if isinstance(m, ToolMessage)}
    shown: list[gr.ChatMessage] = []
    for message in messages:
        if isinstance(message, HumanMessage):
            upload = upload_of(message)
            shown.append(file_bubble(upload) if upload else user_message(message.text))
        elif isinstance(message, AIMessage):
            for call in message.tool_calls:
                shown.append(gr.ChatMessage(
                    role="assistant", content=results.get(call["id"], _args_block(call["args"])),
                    metadata={"title": tool_title(call["name"]), "id": call["id"], "status": "done"}))
            if is_notice(message):
                shown.append(failure_message_bubble(message.text))
            elif message.text:
                cut = CUT_NOTES.get(cut_of(message) or "")
                shown.append(gr.ChatMessage(role="assistant", content=message.text + (f"\n\n{cut}" if cut else "")))
    return shown


def transcript_records(messages: list[BaseMessage]) -> list[dict]:
    """A stored conversation as plain ``{"role", "content"}`` records (for the API): the text as typed."""
    records = []
    for message in messages:
        if isinstance(message, HumanMessage):
            records.append({"role": "user", "content": message.text})
        elif isinstance(message, AIMessage) and message.text and not is_notice(message):
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
        self.notes: list[str] = []  # what the app said about the turn: a cut, trimmed history, no tools
        self._trimmed = False

    @property
    def reply(self) -> str:
        """The turn as one text (the /chat API): the model's words, the app's notes, then a failure."""
        return "\n\n".join(part for part in (self.answer, *self.notes, self.failure) if part)

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
        elif isinstance(event, AnswerCut):
            self.notes.append(CUT_NOTES[event.reason])
            self._mark(CUT_NOTES[event.reason])
        elif isinstance(event, HistoryTrimmed):
            if not self._trimmed:  # once per turn, though each model call of a tool turn trims
                self._trimmed = True
                self._inform(trimmed_note(event.dropped))
        elif isinstance(event, ToolsOff):
            self._inform(TOOLS_OFF_NOTE)

    def _inform(self, text: str) -> None:
        self.notes.append(text)
        self.messages.append(info_bubble(text))
        self._text = None

    def _mark(self, note: str) -> None:
        """Say under the text being shown that it did not finish (once)."""
        if self._text is not None and self._text.content and not self._text.content.endswith(note):
            self._text.content += f"\n\n{note}"

    def mark_stopped(self) -> None:
        """The answer was cut short (Stop, an error, the tab closed): say so under what was shown."""
        self._mark(STOPPED_NOTE)

    def apply_failure(self, sentence: str) -> None:
        self.failure = sentence
        self.mark_stopped()
        self.messages.append(failure_message_bubble(sentence))
        self._text = None
