"""The user in control: what the assistant keeps, export of one's own data, and delete-all."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import gradio as gr
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from agent.cart import cart_item_count, describe_cart
from agent.hygiene import NOTICE, cut_of, upload_of
from memory.conversation_memory import ConversationMemoryManager
from mcp_server.tokens import AssistantTokens
from settings import Settings
from ui.edge import SessionEdge
from agent.file_reader import format_size
from ui.render import CUT_NOTES, STOPPED_NOTE

EXPORT_PREFIX = "cmw-export-"
DELETED_MESSAGE = "All your data was deleted: {n} conversation(s), their messages, carts, files and checkpoints."


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _message_record(message) -> dict:
    if isinstance(message, HumanMessage):
        upload = upload_of(message)
        return {"role": "user", "content": message.text, **({"attached_file": upload} if upload else {})}
    if isinstance(message, ToolMessage):
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text}
    if isinstance(message, AIMessage):
        record = {"role": "assistant", "content": message.text}
        if message.response_metadata.get(NOTICE):  # the app's note on a failed turn, not the model's words
            record["notice"] = message.response_metadata[NOTICE]
        if message.tool_calls:
            record["tool_calls"] = [{"id": c["id"], "name": c["name"], "args": c["args"]} for c in message.tool_calls]
        if cut_of(message) == "stopped":
            record["stopped"] = True  # cut short by Stop, an error or a closed tab: not a finished answer
        elif cut_of(message):
            record["cut"] = cut_of(message)  # "length" (the output limit) or "server" (it ended the stream)
        return record
    return {"role": message.type, "content": str(message.content)}


def _archive_name(conversation_id: str, file) -> str:
    """Where a file's original sits in the export archive: one folder per conversation."""
    return f"{conversation_id}/{file.name}"


class PrivacyHandlers:
    def __init__(self, edge: SessionEdge, manager: ConversationMemoryManager, settings: Settings,
                 tokens: AssistantTokens | None = None):
        self._edge = edge
        self._manager = manager
        self._settings = settings
        self._tokens = tokens

    async def _collect(self, session) -> list[dict]:
        conversations = []
        for record in await self._manager.conversations(session.principal):
            entry = self._manager.entry(record.id, session.principal)
            async with entry.locked():  # a consistent snapshot: no turn is half-written into it
                transcript = await entry.load()
                files = await self._manager.files.list(session.principal, record.id)
            conversations.append({
                "id": record.id, "title": record.title, "created_at": _iso(record.created_at),
                "updated_at": _iso(record.updated_at),
                "deleted_after": _iso(record.updated_at + self._settings.retention_days * 86400),
                "messages": [_message_record(m) for m in transcript.messages],
                "cart": transcript.cart,
                "files": [{"id": f.id, "name": f.name, "size_bytes": f.size, "summary": f.summary,
                           "uploaded_at": _iso(f.created_at), "in_archive": _archive_name(record.id, f)}
                          for f in files]})
        return conversations

    async def keeps(self, request: gr.Request) -> str:
        """"What this assistant keeps": every stored item of this owner and when it will be deleted."""
        session = await self._edge.resolve(request)
        conversations = await self._collect(session)
        days = self._settings.retention_days
        lines = ["### What this assistant keeps about you",
                 f"- **Conversations:** {len(conversations)} stored. Each is deleted {days} days after its last "
                 "message, or now with *Delete* / *Delete all my data*.",
                 "- **Per conversation:** your messages, the replies, tool results, your cart and the files you "
                 "attached (the originals and a search index of their text; deleted with the conversation).",
                 "- **Not kept:** your IP address, the raw session id or your cookie value (only keyed, one-way "
                 "hashes of them).",
                 f"- **This tab's live session:** started {_iso(session.created_at)}; released from memory after "
                 f"{int(self._settings.session_ttl)} s idle (your conversations stay stored).", ""]
        if conversations:
            lines += ["| conversation | messages | cart items | last update | deleted on |", "|---|---|---|---|---|"]
            for c in conversations:
                shown = sum(1 for m in c["messages"] if m["role"] in ("user", "assistant") and m["content"])
                title = c["title"].replace("|", "\\|")
                lines.append(f"| {title} | {shown} | {cart_item_count(c['cart'])} | {c['updated_at']} | "
                             f"{c['deleted_after']} |")
        lines += self._file_lines(conversations)
        lines += await self._token_lines(session, {c["id"]: c["title"] for c in conversations})
        return "\n".join(lines)

    def _file_lines(self, conversations: list[dict]) -> list[str]:
        """Attached files: which conversation holds each, its size and summary."""
        files = [(c["title"], f) for c in conversations for f in c["files"]]
        if not files:
            return []
        total = sum(f["size_bytes"] for _, f in files)
        lines = ["", f"- **Files:** {len(files)} ({format_size(total)} of your {format_size(self._settings.max_storage_bytes)}"
                     "). Never served back through any link; exported as originals.", "",
                 "| file | size | conversation | uploaded |", "|---|---|---|---|"]
        for title, f in files:
            lines.append(f"| {f['name'].replace('|', chr(92) + '|')} | {format_size(f['size_bytes'])} | "
                         f"{title.replace('|', chr(92) + '|')} | {f['uploaded_at']} |")
        return lines

    async def _token_lines(self, session, titles: dict[str, str]) -> list[str]:
        """Assistant (MCP) tokens: which conversation each opens and when it expires (never the token)."""
        records = await self._tokens.list(session.principal) if self._tokens is not None else []
        if not records:
            return []
        lines = ["", f"- **Assistant tokens (MCP):** {len(records)}. Only a keyed hash of each is stored; each dies "
                     "when it expires, when revoked under *Connect an assistant*, with its conversation, or with "
                     "*Delete all my data*.", "", "| token | opens conversation | made | expires |", "|---|---|---|---|"]
        for r in records:
            title = titles.get(r.conversation_id, "(deleted)").replace("|", "\\|")
            lines.append(f"| {r.id} | {title} | {_iso(r.created_at)} | {_iso(r.expires_at)} |")
        return lines

    async def export(self, request: gr.Request) -> tuple[list[str], str]:
        """Write this owner's data as JSON and Markdown into a fresh per-request folder; returns the paths
        (and the folder, which the next step removes once Gradio has copied the files for download)."""
        session = await self._edge.resolve(request)
        conversations = await self._collect(session)
        folder = Path(tempfile.mkdtemp(prefix=EXPORT_PREFIX))
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        data = {"exported_at": _iso(time.time()), "retention_days": self._settings.retention_days,
                "conversations": conversations}
        json_path = folder / f"{EXPORT_PREFIX}{stamp}.json"
        json_path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
        md_path = folder / f"{EXPORT_PREFIX}{stamp}.md"
        md_path.write_text(self._markdown(data), encoding="utf-8")
        paths = [str(json_path), str(md_path)]
        if any(c["files"] for c in conversations):  # the originals, beside the transcript
            archive = folder / f"{EXPORT_PREFIX}{stamp}-files.zip"
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
                for c in conversations:
                    for f in c["files"]:
                        data_bytes = await self._manager.files.content(session.principal, c["id"], f["id"])
                        if data_bytes is not None:
                            bundle.writestr(f["in_archive"], data_bytes)
            paths.append(str(archive))
        return paths, str(folder)

    @staticmethod
    def forget_export(folder: str) -> None:
        """Remove the per-request export folder (Gradio keeps its own short-lived copy for the download)."""
        if folder and Path(folder).name.startswith(EXPORT_PREFIX):
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def _markdown(data: dict) -> str:
        out = [f"# Your CMW Agent data (exported {data['exported_at']})", ""]
        for c in data["conversations"]:
            out += [f"## {c['title']}", f"Created {c['created_at']}, last update {c['updated_at']}, "
                                         f"deleted after {c['deleted_after']}.", ""]
            for m in c["messages"]:
                if m["role"] == "user":
                    out.append(f"**You:** {m['content']}")
                elif m["role"] == "assistant" and m.get("notice"):
                    out.append(f"> **Could not answer.** {m['content']} _(a notice from the app; the model never saw it)_")
                elif m["role"] == "assistant" and m["content"]:
                    cut = STOPPED_NOTE if m.get("stopped") else CUT_NOTES.get(m.get("cut") or "")
                    out.append(f"**Assistant:** {m['content']}" + (f" {cut}" if cut else ""))
                elif m["role"] == "tool":
                    out.append(f"> tool result: {m['content']}")
                out.append("")
            out += [describe_cart(c["cart"]), ""]
            for f in c.get("files", ()):
                out.append(f"- Attached file **{f['name']}** ({format_size(f['size_bytes'])}): {f['summary']} "
                           f"(original in the archive at `{f['in_archive']}`)")
            out.append("")
        return "\n".join(out)

    async def delete_all(self, request: gr.Request):
        """Delete every conversation of this owner, stored or live in any tab (and nothing of anyone
        else's); turns running in them are stopped and write nothing."""
        session = await self._edge.resolve(request)
        count = await self._manager.delete_owner(session.principal)
        gr.Info(DELETED_MESSAGE.format(n=count))
        return [], session.agent.start_new(session.principal).conversation_id

    async def api_delete_all(self, request: gr.Request) -> str:
        """``/delete_all``: the same, for API clients; returns the sentence the page shows."""
        session = await self._edge.resolve(request)
        count = await self._manager.delete_owner(session.principal)
        session.agent.start_new(session.principal)
        return DELETED_MESSAGE.format(n=count)
