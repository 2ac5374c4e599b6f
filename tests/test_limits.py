"""Size, rate and load limits: each answered in the chat with a clear message; nothing refused is stored."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import httpx
from gradio_client import Client
from langchain_core.messages import HumanMessage

from security.admission import BUSY_MESSAGE
from gradio_compat import server_loop
from tests_support import wait_until
from ui.input_guard import EMPTY_MESSAGE, too_long_message

RATE = re.compile(r"You are sending messages too quickly \(limit: (\d+) per minute\)\. "
                  r"Please wait (\d+) seconds and try again\.")


def stored_user_messages(app, client: Client) -> list[str]:
    session = app.registry.peek(client.session_hash)
    transcript = asyncio.run(session.conversation.load())
    return [m.text for m in transcript.messages if isinstance(m, HumanMessage)]


def test_message_length_cap(launch_app):
    app, url = launch_app(max_message_chars=50)
    client = Client(url, verbose=False)
    assert client.predict("x" * 51, api_name="/chat") == too_long_message(50) == (
        "Your message is longer than 50 characters. Please shorten it and send it again.")
    assert client.predict("My name is Short", api_name="/chat").startswith("Nice to meet you, Short")
    assert stored_user_messages(app, client) == ["My name is Short"]


def test_empty_whitespace_control_and_odd_text(launch_app):
    app, url = launch_app()
    client = Client(url, verbose=False)
    for empty in ("", "   \n\t ", "\x00\x01\x1b", "\u200b\u202e"):
        assert client.predict(empty, api_name="/chat") == EMPTY_MESSAGE == "Please type a message first."
    assert client.predict("My name is Ann\x1b[31mRed", api_name="/chat").startswith("Nice to meet you, Ann[31mRed")
    assert stored_user_messages(app, client) == ["My name is Ann[31mRed"]


def raw_chat(url: str, json_text: str) -> tuple[str, str]:
    """Speak Gradio's queue protocol with a hand-written JSON message (so it can hold a lone surrogate)."""
    config = httpx.get(url + "config").json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "chat")
    session_hash = "raw" + uuid.uuid4().hex
    body = '{"data": ["%s"], "fn_index": %d, "session_hash": "%s"}' % (json_text, fn_index, session_hash)
    with httpx.Client(timeout=10) as http:
        http.get(url)
        join = http.post(url + "gradio_api/queue/join", content=body.encode("ascii"),
                         headers={"content-type": "application/json"})
        assert join.status_code == 200, join.text
        with http.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session_hash}) as stream:
            for line in stream.iter_lines():
                if '"process_completed"' in line:
                    return session_hash, json.loads(line[len("data: "):])["output"]["data"][0]
    raise AssertionError("no reply")


def test_text_that_is_not_valid_utf8_is_answered_and_stored_replaced(launch_app):
    app, url = launch_app()
    session_hash, reply = raw_chat(url, "My name is caf\\udce9")  # a lone surrogate: not encodable as UTF-8
    assert reply == "Nice to meet you, caf\ufffd! I'll remember your name in this conversation."
    transcript = asyncio.run(app.registry.peek(session_hash).conversation.load())
    assert transcript.messages[0].text == "My name is caf\ufffd"


def test_huge_request_body_is_refused_before_gradio(launch_app):
    app, url = launch_app()
    with httpx.Client() as http:
        http.get(url)
        response = http.post(url + "gradio_api/queue/join", json={"data": ["x" * 2_000_000], "fn_index": 0,
                                                                   "session_hash": "huge-body-test"})
    assert response.status_code == 413
    assert app.registry.peek("huge-body-test") is None


def test_messages_per_minute_per_owner(launch_app):
    app, url = launch_app(rate_limit_per_owner=3)
    client = Client(url, verbose=False)
    for i in range(3):
        assert "offline demo model" in client.predict(f"hello {i}", api_name="/chat")
    refused = client.predict("My name is TooFast", api_name="/chat")
    match = RATE.fullmatch(refused)
    assert match and match.group(1) == "3" and 1 <= int(match.group(2)) <= 60
    assert "TooFast" not in " ".join(stored_user_messages(app, client))
    other_owner = Client(url, verbose=False)  # another person is not slowed down
    assert other_owner.predict("My name is Fine", api_name="/chat").startswith("Nice to meet you, Fine")


def test_messages_per_minute_per_client_address(launch_app):
    app, url = launch_app(rate_limit_per_ip=4)
    first, second = Client(url, verbose=False), Client(url, verbose=False)
    for client in (first, second, first, second):
        assert "offline demo model" in client.predict("hello", api_name="/chat")
    match = RATE.fullmatch(second.predict("My name is Crowd", api_name="/chat"))
    assert match and match.group(1) == "4"


def test_busy_when_the_waiting_line_is_full(launch_app):
    """One turn runs, one waits, the third is told the assistant is busy. No timing involved: the
    running turn is long and holds its slot until the test stops it, as the Stop button does."""
    app, url = launch_app(concurrency_limit=1, queue_max=1, offline_token_delay=0.02)
    chat = next(fn.fn for fn in app.demo.fns.values() if fn.api_name == "chat")
    admission = chat.__self__._admission  # read only: how many turns wait for a slot
    running, waiting, refused = (Client(url, verbose=False) for _ in range(3))
    long_turn = running.submit("Count to 1000", api_name="/chat")  # 20 s unless stopped
    wait_until(long_turn.outputs, "the first turn never started streaming")
    queued = waiting.submit("Count to 5", api_name="/chat")
    wait_until(lambda: admission.waiting == 1, "the second turn never queued for the slot")

    assert refused.submit("Count to 40", api_name="/chat").result(timeout=30) == BUSY_MESSAGE == (
        "The assistant is busy right now: too many conversations are waiting. Please try again in a minute.")
    server_loop(app.demo).call_soon_threadsafe(app.registry.peek(running.session_hash).stop_turns)  # = Stop
    assert queued.result(timeout=30) == "1 2 3 4 5"
    shown = long_turn.result(timeout=30).split()
    assert 0 < len(shown) < 1000 and shown == [str(n) for n in range(1, len(shown) + 1)]
    assert stored_user_messages(app, refused) == []
