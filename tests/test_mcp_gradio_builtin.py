"""What Gradio's own MCP server (``launch(mcp_server=True)``, gradio/mcp.py in gradio 6.31) shares between
callers - the reason this app serves MCP itself (mcp_server/). See SESSION_ISOLATION.md, "Gradio's
built-in MCP server".

Gradio 6.31 needs the 1.x SDK (``gradio[mcp]`` pins ``mcp<2``); this app pins the 2.x SDK. So:

* with the pinned SDK, Gradio's MCP server does not start at all (first test);
* with the 1.x SDK - installed beside the venv, not on its path, by
  ``pip install --no-deps --target .venv/mcp-legacy -r requirements-mcp-legacy.txt`` - a small app like
  the ones people write runs in a subprocess and the official client shows what its callers share.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests_support import ROOT, free_port

LEGACY_SDK = Path(os.environ.get("CMW_MCP_LEGACY_PATH", Path(sys.prefix) / "mcp-legacy"))
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def test_builtin_mcp_server_does_not_start_with_the_pinned_sdk():
    sys.path.insert(0, str(ROOT / "tests"))
    from gradio_builtin_mcp_app import build

    demo = build()
    port = free_port()
    demo.launch(mcp_server=True, server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        assert demo.mcp_server is False
        assert "call_tool" in demo.mcp_error  # gradio/mcp.py uses the 1.x decorator API
        assert httpx.post(f"http://127.0.0.1:{port}/gradio_api/mcp/", json={}, headers=ACCEPT).status_code == 404
    finally:
        demo.close()


@pytest.fixture
def builtin_server():
    if not (LEGACY_SDK / "mcp" / "server" / "fastmcp").is_dir():
        pytest.skip(f"the 1.x MCP SDK is not installed at {LEGACY_SDK}: run `.venv/bin/pip install --no-deps "
                    "--target .venv/mcp-legacy -r requirements-mcp-legacy.txt` (or set CMW_MCP_LEGACY_PATH)")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LEGACY_SDK), str(ROOT / "tests")]),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "gradio_builtin_mcp_app.py"), str(port)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = ""
        while not line.startswith("MCP "):  # Gradio prints its own banner lines first
            line = process.stdout.readline()
            assert line, "the app ended before its MCP server started"
        assert line.strip() == "MCP True None", f"Gradio's MCP server did not start: {line!r}"
        yield f"http://127.0.0.1:{port}/gradio_api/mcp/"
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _call(url: str, tool: str, text: str = "x") -> str:
    """One MCP session of its own (official client): initialize, one call."""
    async with streamable_http_client(url) as (read, write, *_):
        async with ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool(tool, {"text": text} if tool != "remember" else {"note": text})
            return result.content[0].text


async def test_builtin_mcp_server_serves_every_caller_under_one_gradio_session(builtin_server):
    url = builtin_server
    first = await _call(url, "whoami")  # the loopback client is created lazily, on the first queued call
    others = await asyncio.gather(*(_call(url, "whoami") for _ in range(5)))
    assert others == [first] * 5, "five separate MCP sessions ran under one Gradio session_hash"

    # so whatever an app keys by session_hash is shared: one caller's note is another caller's
    await _call(url, "remember", "note-of-caller-A")
    assert await _call(url, "recall") == "note-of-caller-A"

    # stateless: initialize issues no Mcp-Session-Id, and a bare tools/call with no session is served
    with httpx.Client(headers=ACCEPT, timeout=30) as client:
        opened = client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
        assert opened.status_code == 200 and "mcp-session-id" not in opened.headers
        bare = client.post(url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                      "params": {"name": "recall", "arguments": {"text": "x"}}})
        assert bare.status_code == 200 and "note-of-caller-A" in bare.text

    # an unqueued tool runs with a fresh SessionState per call and cannot read any session_hash
    assert "session_hash" in await _call(url, "whoami_direct")
