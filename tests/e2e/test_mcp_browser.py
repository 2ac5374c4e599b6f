"""Connect an assistant, in a real browser: a token made in the page lets an MCP client (the official
one) change that conversation's cart, and the chat shows it - next turn and after a reload."""

from __future__ import annotations

import asyncio
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

try:
    from playwright.sync_api import expect
except ImportError:  # the ``browser`` fixture reports it
    expect = None

pytestmark = pytest.mark.browser


async def _assistant_adds(url: str, token: str, item: str) -> str:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        async with streamable_http_client(url + "mcp", http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as session:
                await session.initialize()
                result = await session.call_tool("add_to_cart", {"item": item, "quantity": 3})
                return result.content[0].text


def test_a_token_made_in_the_page_changes_that_conversations_cart(launch_app, open_chat):
    app, url = launch_app()
    chat = open_chat(app, url)
    assert "2 × Apples" in chat.ask("Add 2 apples to my cart")

    chat.page.get_by_text("Connect an assistant (MCP)").click()
    chat.page.locator("#make-token").click()
    shown = chat.page.locator("#assistant-token")
    expect(shown).to_contain_text("cmwa_")
    token = re.search(r"cmwa_[A-Za-z0-9_-]+", shown.inner_text()).group(0)
    assert f"{url}mcp" in shown.inner_text() and '"Authorization"' in shown.inner_text()

    item = f"widget{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(1) as pool:  # the MCP client gets an event loop of its own
        added = pool.submit(asyncio.run, _assistant_adds(url, token, item)).result(timeout=60)
    assert f"Added 3 × {item}" in added and "2 × Apples" in added

    cart = chat.ask("Show my cart")
    assert f"3 × {item}" in cart and "2 × Apples" in cart
    chat.page.reload()
    chat.open()
    expect(chat.page.locator("#chatbot")).to_contain_text("assistant connected over MCP")

    stranger = open_chat(app, url)
    assert item not in stranger.ask("Show my cart")
    chat.assert_no_error(), stranger.assert_no_error()
