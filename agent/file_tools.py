"""Agent tools over the person's own files: list, describe, query a table, search the text.

Each reaches files only through ``runtime.context.files`` (a :class:`~agent.context.ConversationFiles`
bound by the handler to this owner and conversation). A file is named by its file name, never by a path
or an id the model could point elsewhere. Parsing runs in a worker thread, off the event loop. Problems
(no such file, unknown column) go back to the model as the tool's answer, a sentence saying what exists.
"""

from __future__ import annotations

import asyncio

from langchain.tools import ToolRuntime, tool
from langchain_core.tools import BaseTool

from agent.context import ConversationFiles, TurnContext
from agent.file_reader import describe_table, format_size, load_table, query_table as run_table_query

NO_FILES = ("You have no files in this conversation yet. Attach CSV, TSV, TXT, Markdown, JSON or PDF files with "
            "the paperclip button next to the message box.")
SEARCH_HITS = 10


def _files(runtime: ToolRuntime) -> ConversationFiles | None:
    context = runtime.context
    return getattr(context, "files", None)


async def _named(files: ConversationFiles, name: str):
    """The file called ``name`` (or an answer saying which files exist)."""
    found = await files.find(name)
    if found is not None:
        return found, None
    names = [f.name for f in await files.list()]
    if not names:
        return None, NO_FILES
    return None, f"There is no file called {name!r} here. Your files: {', '.join(names)}."


async def _stored(runtime: ToolRuntime, name: str):
    """The file called ``name`` and its bytes, or the sentence to answer instead."""
    files = _files(runtime)
    if files is None:
        return NO_FILES
    found, answer = await _named(files, name)
    if found is None:
        return answer
    data = await files.content(found)
    return (found, data) if data is not None else f"{found.name} is no longer stored."


def build_file_tools() -> list[BaseTool]:
    """The file tools; they close over nothing (all they reach comes with each call's context)."""

    @tool
    async def list_my_files(runtime: ToolRuntime[TurnContext]) -> str:
        """List the files the user attached to this conversation, with sizes and a one-line summary each."""
        files = _files(runtime)
        stored = await files.list() if files else []
        if not stored:
            return NO_FILES
        lines = [f"- {f.name} ({format_size(f.size)}): {f.summary}" for f in stored]
        return f"Your files ({len(stored)}):\n" + "\n".join(lines)

    @tool
    async def describe_file(name: str, runtime: ToolRuntime[TurnContext]) -> str:
        """Describe one of the user's files by its file name: for tables the columns, types, row count and
        the first rows; for text and PDF the summary and the opening lines."""
        stored = await _stored(runtime, name)
        if isinstance(stored, str):
            return stored
        found, data = stored
        if found.kind == "table":
            table = await asyncio.to_thread(load_table, data, found.media_type)
            return await asyncio.to_thread(describe_table, table, found.name)
        text = data.decode("utf-8", errors="replace") if found.kind != "pdf" else ""
        opening = "\n".join(line for line in text.splitlines()[:8] if line.strip())
        return f"{found.name} ({format_size(found.size)}): {found.summary}." + (f"\nIt begins:\n{opening}"
                                                                                if opening else "")

    @tool
    async def query_table(name: str, operation: str, runtime: ToolRuntime[TurnContext], column: str | None = None,
                          where_column: str | None = None, where_value: str | None = None, n: int = 5) -> str:
        """Compute over a CSV/TSV file of the user's: `operation` is one of count, sum, mean, min, max, top.
        `column` is the column to sum/average/rank (not needed for count); `top` returns the `n` rows with
        the largest `column`. Optionally keep only rows where `where_column` equals `where_value`."""
        stored = await _stored(runtime, name)
        if isinstance(stored, str):
            return stored
        found, data = stored
        if found.kind != "table":
            return f"{found.name} is not a table (it is {found.summary}); search it with search_my_files instead."
        try:
            table = await asyncio.to_thread(load_table, data, found.media_type)
            return await asyncio.to_thread(run_table_query, table, found.name, operation, column, where_column,
                                           where_value, max(1, min(int(n), 50)))
        except ValueError as problem:  # unknown column or operation: the sentence names what exists
            return str(problem)

    @tool
    async def search_my_files(query: str, runtime: ToolRuntime[TurnContext]) -> str:
        """Full-text search over every file the user attached to this conversation. Returns the matching lines
        (or rows, or pages) with their file names."""
        files = _files(runtime)
        if files is None or not await files.list():
            return NO_FILES
        hits = await files.search(query, SEARCH_HITS)
        if not hits:
            return f"Nothing in your files matches {query.strip()!r}."
        lines = [f"- {hit.file_name}, {hit.location}: {hit.text}" for hit in hits]
        return f"Found in your files ({len(hits)}):\n" + "\n".join(lines)

    return [list_my_files, describe_file, query_table, search_my_files]
