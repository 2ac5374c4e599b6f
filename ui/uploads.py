"""Attaching files: the paperclip button in the page and ``/upload`` for API clients.

A file arrives in Gradio's upload cache (the HTTP guard has noted who uploaded it, and refuses anyone
else who names its path). Here it is checked by content (agent/file_reader.py), stored as the owner's
data in the conversation the tab shows (memory/file_store.py: the original and a full-text index, one
transaction, quotas first), marked in the conversation as a file bubble, and its cache copy is deleted
at once - accepted or refused. A refused file leaves nothing behind. Holds shared services only.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from agent.file_reader import FileRefused, read_upload
from agent.file_reader import format_size
from agent.hygiene import upload_note
from gradio_compat import normal_path, upload_folder
from memory.conversation_memory import ConversationMemoryManager
from memory.session import Session
from security.rate_limit import RateLimiter, rate_limit_message
from settings import Settings
from ui.chat_handler import notice
from ui.edge import SessionEdge
from ui.failures import failure_message, told_to_the_person
from ui.render import render_transcript

log = logging.getLogger("cmw.uploads")
NO_FILE = "Choose a file to attach first (CSV, TSV, TXT, Markdown, JSON or PDF)."


@dataclass(frozen=True)
class Attached:
    """One file's outcome: its bubble (accepted) or the sentence saying why not (refused)."""

    name: str
    line: str  # "orders.csv (12.3 KB): 1,000 rows × 5 columns", or the refusal
    bubble: dict | None = None


def _paths(files) -> list[str]:
    """The cache paths Gradio handed over (one or many; str or FileData-like)."""
    items = files if isinstance(files, (list, tuple)) else [files]
    return [str(getattr(item, "path", item)) for item in items if item]


def discard_cache_copy(path: str) -> None:
    """Delete an upload from Gradio's cache (and its folder, once empty). Only inside the upload folder."""
    real = normal_path(path)
    if os.path.commonpath([real, upload_folder()]) != upload_folder():
        return
    try:
        os.remove(real)
        os.rmdir(os.path.dirname(real))
    except OSError:  # already gone, or the folder holds another file
        pass


class UploadHandlers:
    def __init__(self, edge: SessionEdge, manager: ConversationMemoryManager, settings: Settings):
        self._edge = edge
        self._manager = manager
        self._settings = settings
        self._owner_limit = RateLimiter(settings.rate_limit_per_owner, redis_url=settings.redis_url,
                                        name="upload-owner")

    async def _ingest(self, session: Session, path: str) -> Attached:
        """Check, store and mark one file; its cache copy is gone afterwards, whatever happened."""
        name = Path(path).name
        try:
            size = os.path.getsize(path)
            if size > self._settings.max_upload_bytes:  # refused before it is read
                raise FileRefused(f"{name} is {size / 1048576:.1f} MB; the limit is "
                                  f"{self._settings.max_upload_mb:g} MB per file.")
            data = await asyncio.to_thread(Path(path).read_bytes)
            read = await asyncio.to_thread(read_upload, name, data, max_bytes=self._settings.max_upload_bytes)
            async with session.agent.locked_current(session.principal) as conversation:
                if not await self._manager.record_turn(conversation, session.principal, session.fingerprint,
                                                       read.name):
                    raise FileRefused(f"{read.name} was not stored: this conversation is not yours. Start a new chat.")
                stored = await self._manager.files.add(
                    session.principal, conversation.conversation_id, read, data,
                    max_owner_bytes=self._settings.max_storage_bytes,
                    max_files_per_conversation=self._settings.max_files_per_conversation)
                note = upload_note(stored.name, format_size(stored.size), stored.summary)
                await conversation.append_upload(note)
            session.touch()
            log.info("session %s: stored a %s file (%d bytes)", session.fingerprint, stored.kind, stored.size)
            return Attached(stored.name, f"{stored.name} ({format_size(stored.size)}): {stored.summary}",
                            note.additional_kwargs["cmw_upload"])
        except FileRefused as refused:
            return Attached(name, str(refused))
        except OSError:
            log.warning("session %s: an upload vanished before it was read", session.fingerprint)
            return Attached(name, f"{name} could not be read. Please attach it again.")
        finally:
            discard_cache_copy(path)

    async def _rate_refusal(self, session: Session) -> str | None:
        wait = await self._owner_limit.wait_seconds(session.principal)
        return rate_limit_message(self._owner_limit.limit, wait) if wait else None

    async def attach(self, files, conversation_ref: str, request: gr.Request):
        """The paperclip: yields (chat, conversation reference, message box, notice) - progress while files
        are read, then a file bubble per accepted file and one notice naming any refused one."""
        paths = _paths(files)
        try:
            session = await self._edge.resolve_showing(request, conversation_ref)
            refusal = NO_FILE if not paths else await self._rate_refusal(session)
            if refusal:
                for path in paths:
                    discard_cache_copy(path)
                yield gr.skip(), gr.skip(), gr.skip(), notice(refusal)
                return
            refused = []
            for number, path in enumerate(paths, 1):
                size = os.path.getsize(path) if os.path.exists(path) else 0
                counter = f" ({number} of {len(paths)})" if len(paths) > 1 else ""
                yield gr.skip(), gr.skip(), gr.skip(), notice(
                    f"Reading {Path(path).name} ({format_size(size)}){counter}…")
                outcome = await self._ingest(session, path)
                if outcome.bubble is None:
                    refused.append(outcome.line)
            history = render_transcript((await session.conversation.load()).messages)
        except gr.Error:
            for path in paths:
                discard_cache_copy(path)
            raise
        except Exception as error:
            log.exception("attaching files failed")
            for path in paths:
                discard_cache_copy(path)
            yield gr.skip(), gr.skip(), gr.skip(), notice(failure_message(error))
            return
        yield history, session.conversation.conversation_id, gr.skip(), notice(
            " ".join(f"Not attached: {line}" for line in refused) or None)

    async def api_upload(self, file, request: gr.Request) -> str:
        """``/upload``: one file in (``gradio_client.handle_file``), its one-line summary out - or the
        sentence saying why it was not stored. Same session and owner rules as ``/chat``."""
        paths = _paths(file)
        with told_to_the_person(log, "/upload"):
            try:
                session = await self._edge.resolve(request)
                if not paths:
                    return NO_FILE
                refusal = await self._rate_refusal(session)
                if refusal:
                    return refusal
                outcome = await self._ingest(session, paths[0])
                return outcome.line if outcome.bubble is not None else f"Not attached: {outcome.line}"
            finally:
                for path in paths:
                    discard_cache_copy(path)

