"""The cart over MCP, driven by the official MCP client against the real app (mcp_server/)."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from contextlib import asynccontextmanager, closing

import httpx
import httpx2
import pytest
from gradio_client import Client
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mcp_server import http as endpoint
from tests_support import ROOT  # noqa: F401  (sys.path set up by conftest)

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}


def call(name: str, arguments: dict, request_id: int = 2) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


def canary() -> str:
    return f"canary{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def mcp(url: str, token: str | None = None):
    """One official-client MCP session against ``url`` (the app's base URL)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http:
        async with streamable_http_client(url + "mcp", http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


async def text(session: ClientSession, tool: str, arguments: dict | None = None, meta: dict | None = None) -> str:
    result = await session.call_tool(tool, arguments or {}, meta=meta)
    assert not result.is_error, result.content[0].text
    return result.content[0].text


def conversation_rows(app) -> int:
    """Stored conversations of anyone (0 before the store was first opened)."""
    with closing(sqlite3.connect(app.manager.store.path, timeout=10)) as conn:
        try:
            return conn.execute("SELECT count(*) FROM cmw_conversations").fetchone()[0]
        except sqlite3.OperationalError:  # no table yet: nothing was ever stored
            return 0


def raw_session(url: str, headers: dict | None = None) -> tuple[httpx.Client, str]:
    """A raw HTTP MCP session: (client, Mcp-Session-Id) after initialize + initialized."""
    client = httpx.Client(base_url=url, headers={**ACCEPT, **(headers or {})}, timeout=30)
    opened = client.post("mcp", json=INITIALIZE)
    assert opened.status_code == 200, opened.text
    session_id = opened.headers["mcp-session-id"]
    client.post("mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                headers={"mcp-session-id": session_id})
    return client, session_id


def sse_result(response: httpx.Response) -> dict:
    for line in response.text.splitlines():
        if line.startswith("data: "):
            return json.loads(line[6:])
    return response.json()


# -- isolation --------------------------------------------------------------------------------------
async def test_thirty_concurrent_mcp_sessions_each_see_only_their_own_cart(launch_app):
    app, url = launch_app()
    canaries = [canary() for _ in range(30)]
    seen: dict[int, tuple[str, str, str]] = {}

    async def one(i: int) -> None:
        async with mcp(url) as session:
            names = {t.name for t in (await session.list_tools()).tools}
            assert names == {"add_to_cart", "remove_from_cart", "view_cart", "clear_cart", "my_session"}
            added = await text(session, "add_to_cart", {"item": canaries[i], "quantity": 2})
            await asyncio.sleep(0.05)  # let the others write in between
            seen[i] = (added, await text(session, "view_cart"), await text(session, "my_session"))

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(30))), timeout=90)
    elapsed = time.monotonic() - started
    for i, (added, cart, about) in seen.items():
        assert f"Added 2 × {canaries[i]} to your cart as a custom item" in added
        assert cart == (f"Your cart:\n- 2 × {canaries[i]} (custom item, no price)\n"
                        "Total: $0.00 USD (plus 1 custom item without a price).")
        foreign = [c for j, c in enumerate(canaries) if j != i and (c in added or c in cart or c in about)]
        assert foreign == [], f"session {i} saw other sessions' items: {foreign}"
        lines = about.splitlines()  # this session's facts and cart, nothing else (not even a count of others)
        assert [line.split(":")[0] for line in lines[:4]] == ["Your MCP session", "- Fingerprint", "- Started",
                                                               "- Last active"]
        assert lines[4:] == cart.splitlines()
    fingerprints = {about.split("Fingerprint: ")[1][:16] for _, _, about in seen.values()}
    assert len(fingerprints) == 30
    print(f"30 concurrent MCP sessions: {elapsed:.2f} s wall")


async def test_meta_conversation_hint_narrows_a_session_never_widens_it(launch_app):
    _, url = launch_app()
    first, second, other = canary(), canary(), canary()
    async with mcp(url) as session, mcp(url) as stranger:
        await text(session, "add_to_cart", {"item": first}, meta={"openai/conversation": "chat-1"})
        await text(session, "add_to_cart", {"item": second}, meta={"openai/conversation": "chat-2"})
        await text(stranger, "add_to_cart", {"item": other}, meta={"openai/conversation": "chat-1"})
        one = await text(session, "view_cart", meta={"openai/conversation": "chat-1"})
        two = await text(session, "view_cart", meta={"openai/conversation": "chat-2"})
        plain = await text(session, "view_cart")
        theirs = await text(stranger, "view_cart", meta={"openai/conversation": "chat-1"})
    assert first in one and second not in one and other not in one
    assert second in two and first not in two
    assert plain == "Your cart is empty."
    assert other in theirs and first not in theirs


async def test_my_session_tells_only_about_this_session(launch_app):
    _, url = launch_app()
    mine, theirs = canary(), canary()
    async with mcp(url) as session, mcp(url) as stranger:
        await text(stranger, "add_to_cart", {"item": theirs})
        await text(session, "add_to_cart", {"item": mine, "quantity": 3})
        about = await text(session, "my_session")
        other = await text(stranger, "my_session")
    assert about.startswith("Your MCP session:\n- Fingerprint: ")
    assert "- 3 × " + mine in about and theirs not in about
    assert other.split("Fingerprint: ")[1][:16] not in about


# -- refusals ---------------------------------------------------------------------------------------
def test_session_less_calls_are_refused_and_change_nothing(launch_app):
    app, url = launch_app()
    with httpx.Client(base_url=url, headers=ACCEPT, timeout=30) as client:
        refused = client.post("mcp", json=call("add_to_cart", {"item": canary()}))
        assert refused.status_code == 400
        assert refused.json()["error"]["message"] == endpoint.NO_SESSION
        listing = client.post("mcp", json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
        assert listing.status_code == 400
        assert client.get("mcp").status_code == 400
        modern = client.post("mcp", json=call("view_cart", {}), headers={"mcp-protocol-version": "2026-07-28"})
        assert modern.status_code == 400 and "needs an MCP session" in modern.json()["error"]["message"]
    assert conversation_rows(app) == 0


def test_forged_and_foreign_session_ids_are_refused(launch_app):
    app, url = launch_app()
    client, session_id = raw_session(url)
    item = canary()
    try:
        added = client.post("mcp", json=call("add_to_cart", {"item": item}), headers={"mcp-session-id": session_id})
        assert item in sse_result(added)["result"]["content"][0]["text"]
        before = conversation_rows(app)
        for forged in (uuid.uuid4().hex, session_id[:-1] + ("0" if session_id[-1] != "0" else "1"), "default"):
            refused = client.post("mcp", json=call("view_cart", {}), headers={"mcp-session-id": forged})
            assert refused.status_code == 404 and refused.json()["error"]["message"] == endpoint.UNKNOWN_SESSION
        # the same session id under another credential (a valid assistant token) is not that session
        web = Client(url, verbose=False)
        token = web.predict(api_name="/assistant_token")["token"]
        stolen = client.post("mcp", json=call("view_cart", {}),
                             headers={"mcp-session-id": session_id, "Authorization": f"Bearer {token}"})
        assert stolen.status_code == 404 and item not in stolen.text
        web.close()
    finally:
        client.close()
    assert conversation_rows(app) == before + 1  # the token's conversation; nothing from the refused calls


def test_a_token_session_is_refused_without_its_token(launch_app):
    _, url = launch_app()
    web = Client(url, verbose=False)
    web.predict("Add 2 apples to my cart", api_name="/chat")
    token = web.predict(api_name="/assistant_token")["token"]
    client, session_id = raw_session(url, {"Authorization": f"Bearer {token}"})
    try:
        viewed = client.post("mcp", json=call("view_cart", {}), headers={"mcp-session-id": session_id})
        assert "2 × Apples" in sse_result(viewed)["result"]["content"][0]["text"]
        bare = httpx.post(url + "mcp", json=call("view_cart", {}), headers={**ACCEPT, "mcp-session-id": session_id})
        assert bare.status_code == 404 and "Apples" not in bare.text
    finally:
        client.close()
        web.close()


def test_bad_arguments_are_answered_and_store_nothing(launch_app):
    app, url = launch_app()

    async def scenario():
        async with mcp(url) as session:
            answers = {}
            for label, arguments in {"negative": {"item": "apples", "quantity": -1},
                                     "huge": {"item": "x" * 10_000},
                                     "number item": {"item": 5},
                                     "text quantity": {"item": "apples", "quantity": "many"},
                                     "fraction": {"item": "apples", "quantity": 1.5},
                                     "missing": {}}.items():
                result = await session.call_tool("add_to_cart", arguments)
                assert result.is_error, label
                answers[label] = result.content[0].text
            return answers

    answers = asyncio.run(scenario())
    assert "`quantity` must be between 1 and 1000 (got -1). Nothing was changed." in answers["negative"]
    assert "`item` is 10,000 characters long; the limit is 200. Nothing was changed." in answers["huge"]
    assert "`item` must be text (a product name), not a number" in answers["number item"]
    assert "`quantity` must be a whole number from 1 to 1000, not text" in answers["text quantity"]
    assert "not a number" in answers["fraction"]
    assert "item" in answers["missing"]
    assert all("x" * 100 not in a for a in answers.values())
    assert conversation_rows(app) == 0


def test_cross_site_browser_requests_to_mcp_are_refused(launch_app):
    app, url = launch_app()
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):
        refused = httpx.post(url + "mcp", json=INITIALIZE, headers={**ACCEPT, **headers}, timeout=30)
        assert refused.status_code == 403, headers
    assert httpx.get(url + "mcp", headers={"Origin": "https://evil.example"}, timeout=30).status_code == 403
    same = httpx.post(url + "mcp", json=INITIALIZE, headers={**ACCEPT, "Origin": url.rstrip("/")}, timeout=30)
    assert same.status_code == 200


# -- limits -----------------------------------------------------------------------------------------
def test_sessions_per_address_are_bounded(launch_app):
    _, url = launch_app(mcp_sessions_per_address=3)
    for _ in range(3):
        raw_session(url)[0].close()
    refused = httpx.post(url + "mcp", json=INITIALIZE, headers=ACCEPT, timeout=30)
    assert refused.status_code == 429
    assert refused.json()["error"]["message"].startswith("Too many MCP sessions from your address (limit: 3 per hour)")


async def test_calls_per_minute_per_session_are_bounded(launch_app):
    _, url = launch_app(mcp_calls_per_minute=5)
    async with mcp(url) as session, mcp(url) as other:
        for _ in range(5):
            await text(session, "view_cart")
        refused = await session.call_tool("add_to_cart", {"item": "apples"})
        assert refused.is_error
        assert "Too many calls in this MCP session (limit: 5 per minute). Wait " in refused.content[0].text
        assert await text(other, "view_cart") == "Your cart is empty."  # the limit is per session
        assert "Apples" not in await text(other, "view_cart")


def test_oversized_request_is_refused(launch_app):
    _, url = launch_app()
    big = dict(INITIALIZE, params={**INITIALIZE["params"], "padding": "x" * 70_000})
    assert httpx.post(url + "mcp", json=big, headers=ACCEPT, timeout=30).status_code == 413


# -- the page's token -------------------------------------------------------------------------------
async def test_a_token_from_the_page_drives_that_conversations_cart_and_nobody_elses(launch_app):
    app, url = launch_app()
    web, neighbour = Client(url, verbose=False), Client(url, verbose=False)
    try:
        await asyncio.to_thread(web.predict, "Add 2 apples to my cart", api_name="/chat")
        await asyncio.to_thread(neighbour.predict, "Add 1 milk to my cart", api_name="/chat")
        made = await asyncio.to_thread(web.predict, api_name="/assistant_token")
        assert made["mcp_url"] == url + "mcp" and made["token"].startswith("cmwa_")
        item = canary()
        async with mcp(url, made["token"]) as assistant, mcp(url) as stranger:
            seen = await text(assistant, "view_cart")
            assert "2 × Apples" in seen and "Milk" not in seen
            await text(assistant, "add_to_cart", {"item": item, "quantity": 3})
            await text(assistant, "remove_from_cart", {"item": "apples"})
            assert item not in await text(stranger, "view_cart")
        shown = await asyncio.to_thread(web.predict, "Show my cart", api_name="/chat")
        assert f"3 × {item}" in shown and "Apples" not in shown
        assert item not in await asyncio.to_thread(neighbour.predict, "Show my cart", api_name="/chat")
        [current] = await asyncio.to_thread(web.predict, api_name="/conversations")
        messages = await asyncio.to_thread(web.predict, current["id"], api_name="/resume")  # the page after reload
        assert any("assistant connected over MCP" in m["content"] for m in messages)
    finally:
        web.close()
        neighbour.close()


async def test_revoked_and_forged_tokens_are_refused(launch_app):
    app, url = launch_app()
    web = Client(url, verbose=False)
    try:
        made = await asyncio.to_thread(web.predict, api_name="/assistant_token")
        async with mcp(url, made["token"]) as assistant:
            await text(assistant, "add_to_cart", {"item": "apples"})
            revoked = await asyncio.to_thread(web.predict, made["token_id"], api_name="/revoke_assistant_token")
            assert revoked == f"Token {made['token_id']} was revoked: assistants using it are refused from now on."
            with pytest.raises(Exception):
                await assistant.call_tool("add_to_cart", {"item": "pears"})
        refused = httpx.post(url + "mcp", json=INITIALIZE, headers={**ACCEPT, "Authorization": f"Bearer {made['token']}"})
        assert refused.status_code == 401 and refused.json()["error"]["message"] == endpoint.BAD_TOKEN
        for forged in ("cmwa_" + "A" * 43, made["token"] + "x", "not-a-token"):
            assert httpx.post(url + "mcp", json=INITIALIZE,
                              headers={**ACCEPT, "Authorization": f"Bearer {forged}"}).status_code == 401

    finally:
        web.close()


async def test_expired_tokens_open_nothing(make_settings):
    from app_ng import build_app

    app = build_app(make_settings(mcp_token_hours=0.01))
    store = app.manager.store
    try:
        tokens = app.mcp.tokens
        token, record = await tokens.mint("owner-a", "conversation-a", now=time.time() - 3600)
        assert await tokens.verify(token) is None
        live, _ = await tokens.mint("owner-a", "conversation-a")
        assert (await tokens.verify(live)).owner == "owner-a"
        assert await store.expire_tokens() == 1
        assert [r.id for r in await tokens.list("owner-a")] != [record.id]
    finally:
        await store.close()


CLIENT_LOGGERS = ("httpx", "httpcore", "httpx2", "httpcore2", "mcp.client", "gradio_client", "asyncio")


async def test_tokens_and_session_ids_are_stored_hashed_and_never_logged(launch_app, caplog):
    caplog.set_level(logging.DEBUG)
    app, url = launch_app()
    web = Client(url, verbose=False)
    forged = uuid.uuid4().hex
    try:
        made = await asyncio.to_thread(web.predict, api_name="/assistant_token")
        async with mcp(url, made["token"]) as assistant, mcp(url) as plain:
            await text(assistant, "add_to_cart", {"item": "apples"})
            await text(plain, "my_session")
        client, session_id = await asyncio.to_thread(raw_session, url)
        await asyncio.to_thread(client.post, "mcp", json=call("view_cart", {}), headers={"mcp-session-id": session_id})
        await asyncio.to_thread(client.post, "mcp", json=call("view_cart", {}), headers={"mcp-session-id": forged})
        client.close()
    finally:
        web.close()
    server_side = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS))
    secret = made["token"].removeprefix("cmwa_")
    assert "MCP session" in server_side  # the app does log sessions - by fingerprint
    for raw in (secret, session_id, forged):
        assert raw not in server_side
    stored = b"".join(p.read_bytes() for p in app.manager.store.path.parent.glob("cmw.sqlite*"))
    assert secret.encode() not in stored and session_id.encode() not in stored


async def test_keeps_panel_lists_tokens_and_delete_all_removes_them(make_settings):
    from types import SimpleNamespace

    from app_ng import build_app
    from tests_support import handler_request
    from ui.assistant import AssistantHandlers
    from ui.edge import SessionEdge
    from ui.privacy import PrivacyHandlers

    app = build_app(make_settings())
    edge = SessionEdge(app.registry, app.credentials)
    assistant = AssistantHandlers(edge, app.manager, app.mcp.tokens)
    privacy = PrivacyHandlers(edge, app.manager, app.settings, app.mcp.tokens)
    request = handler_request("tab-1", "owner-1")
    request.request.headers = {"host": "cart.example"}
    request.request.url = SimpleNamespace(scheme="https", netloc="cart.example")
    try:
        made = await assistant.api_token(request)
        assert made["mcp_url"] == "https://cart.example/mcp"
        keeps = await privacy.keeps(request)
        assert made["token_id"] in keeps and made["token"] not in keeps and "Assistant tokens (MCP):** 1" in keeps
        assert (await app.mcp.tokens.verify(made["token"])).conversation_id == made["conversation_id"]
        await privacy.api_delete_all(request)
        assert await app.mcp.tokens.verify(made["token"]) is None
        assert "Assistant tokens" not in await privacy.keeps(request)
    finally:
        await app.manager.store.close()


@pytest.mark.timeout(300)  # two cold starts of the app process; slow on a loaded 2-core machine
def test_restart_keeps_the_cart_a_token_opens(tmp_path):
    from test_continuity import ServerProcess

    data = tmp_path / "data"
    item = canary()
    server = ServerProcess(data)
    try:
        web = Client(server.url, verbose=False)
        web.predict("Add 2 apples to my cart", api_name="/chat")
        made = web.predict(api_name="/assistant_token")
        cookie = {"Cookie": "; ".join(f"{k}={v}" for k, v in web.cookies.items())}
        web.close()

        async def add():
            async with mcp(server.url, made["token"]) as assistant:
                await text(assistant, "add_to_cart", {"item": item, "quantity": 4})
        asyncio.run(add())
        tokenless, tokenless_id = raw_session(server.url)
        tokenless.post("mcp", json=call("add_to_cart", {"item": "pears"}), headers={"mcp-session-id": tokenless_id})
        tokenless.close()
    finally:
        server.stop()

    server = ServerProcess(data)
    try:
        async def view():
            async with mcp(server.url, made["token"]) as assistant:
                return await text(assistant, "view_cart")
        cart = asyncio.run(view())
        assert f"4 × {item}" in cart and "2 × Apples" in cart
        back = Client(server.url, verbose=False, headers=cookie)
        [conversation] = back.predict(api_name="/conversations")
        back.predict(conversation["id"], api_name="/resume")
        assert f"4 × {item}" in back.predict("Show my cart", api_name="/chat")
        back.close()
        # a session without a token ends with the process (the SDK keeps transport sessions in memory):
        # its id is refused with what to do, never mapped to someone else's cart
        gone = httpx.post(server.url + "mcp", json=call("view_cart", {}),
                          headers={**ACCEPT, "mcp-session-id": tokenless_id}, timeout=30)
        assert gone.status_code == 404 and gone.json()["error"]["message"] == endpoint.UNKNOWN_SESSION
    finally:
        server.stop()


async def test_no_mcp_tool_takes_a_session_or_user_id(make_settings):
    from app_ng import build_app

    app = build_app(make_settings())
    tools = await app.mcp.server.list_tools()
    assert {t.name for t in tools} == {"add_to_cart", "remove_from_cart", "view_cart", "clear_cart", "my_session"}
    for tool in tools:
        fields = set(tool.input_schema.get("properties", {}))
        assert not {f for f in fields if any(w in f for w in ("session", "user", "owner", "thread", "conversation",
                                                               "token"))}, (tool.name, fields)
    schema = {t.name: t.input_schema for t in tools}["add_to_cart"]
    assert schema["properties"]["item"]["maxLength"] == 200 and schema["properties"]["quantity"]["minimum"] == 1
    assert schema["required"] == ["item"]


def test_every_assistant_handler_takes_the_request():
    import inspect

    from ui.assistant import AssistantHandlers

    for name, method in inspect.getmembers(AssistantHandlers, inspect.isfunction):
        if not name.startswith("_"):
            assert "request" in inspect.signature(method).parameters, name


async def test_eviction_of_mcp_sessions_loses_nothing(launch_app):
    app, url = launch_app(session_max=2)  # four MCP sessions take turns in a registry that holds two
    items = [canary() for _ in range(4)]
    async with mcp(url) as a, mcp(url) as b, mcp(url) as c, mcp(url) as d:
        sessions = [a, b, c, d]
        for round_ in range(2):
            for session, item in zip(sessions, items):
                await text(session, "add_to_cart", {"item": item})
        carts = [await text(session, "view_cart") for session in sessions]
        assert len(app.registry) <= 2
    for item, cart in zip(items, carts):
        assert f"2 × {item}" in cart and sum(other in cart for other in items) == 1


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_assistant_tokens_in_the_store(backend, request, make_settings):
    """Tokens on each backend: verified by keyed hash, listed and revoked per owner, gone with their
    conversation, with delete-all and when expired."""
    from app_ng import build_app

    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    app = build_app(make_settings(database_url=url))
    store, tokens, manager = app.manager.store, app.mcp.tokens, app.manager
    try:
        entry = manager.entry(principal="alice")
        async with entry.lock:
            assert await manager.record_turn(entry, "alice", "fp", "hello")
        kept, record = await tokens.mint("alice", entry.conversation_id)
        other, _ = await tokens.mint("alice", "another-conversation")
        bobs, bob_record = await tokens.mint("bob", "bobs-conversation")
        assert (await tokens.verify(kept)) == record and await tokens.verify(kept + "x") is None
        assert [r.id for r in await tokens.list("bob")] == [bob_record.id]
        assert not await tokens.revoke(bob_record.id, "alice") and await tokens.verify(bobs) is not None
        assert await manager.delete(entry.conversation_id, "alice")
        assert await tokens.verify(kept) is None and await tokens.verify(other) is not None
        await manager.delete_owner("alice")
        assert await tokens.list("alice") == [] and await tokens.verify(bobs) is not None
        assert await tokens.revoke(bob_record.id, "bob") and await tokens.verify(bobs) is None
        expired, _ = await tokens.mint("bob", "bobs-conversation", now=time.time() - 10 * 86400)
        assert await tokens.verify(expired) is None and await store.expire_tokens() == 1
    finally:
        await store.close()
