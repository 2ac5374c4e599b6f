"""The real app, launched in-process on a free port, driven by many gradio_client sessions at once.

Every wait is bounded: barriers time out (a thread that never arrives breaks them for all), and each
turn is ``submit(...).result(timeout=...)``. Clients are kept until the assertions are done and then
closed: a client that is garbage-collected stops its heartbeat, and Gradio then unloads its session.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from gradio_client import Client

TURN_TIMEOUT = 30  # seconds for one turn, however loaded the machine
START_TIMEOUT = 60  # seconds for every client to connect and reach the starting line


def chat(client: Client, text: str) -> str:
    return client.submit(text, api_name="/chat").result(timeout=TURN_TIMEOUT)


def converse(client: Client, index: int, barrier: threading.Barrier) -> dict:
    name = f"Canary{uuid.uuid4().hex[:10]}"
    item = f"gadget{uuid.uuid4().hex[:8]}"  # unique custom cart item
    barrier.wait()
    replies = [chat(client, f"My name is {name}"),
               chat(client, f"Add {index % 7 + 1} {item} to my cart"),
               chat(client, "What's my name?"),
               chat(client, "Show my cart")]
    return {"name": name, "item": item, "qty": index % 7 + 1, "replies": replies}


def test_thirty_concurrent_sessions_each_see_exactly_their_own(launch_app, clients):
    app, url = launch_app()
    n = 32
    barrier = threading.Barrier(n, timeout=START_TIMEOUT)

    def one(i: int) -> dict:
        client = Client(url, verbose=False)
        clients.append(client)
        return converse(client, i, barrier)

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    names = {r["name"] for r in results}
    items = {r["item"] for r in results}
    assert len(names) == len(items) == n
    for r in results:
        assert r["replies"][2] == f"Your name is {r['name']}."
        assert r["replies"][3] == (f"Your cart:\n- {r['qty']} × {r['item']} (custom item, no price)\n"
                                   "Total: $0.00 USD (plus 1 custom item without a price).")
        everything = "\n".join(r["replies"])
        assert not (names - {r["name"]}) & set(_words(everything)), "another session's name leaked"
        assert not (items - {r["item"]}) & set(_words(everything)), "another session's cart item leaked"
    assert all(app.registry.peek(client.session_hash) is not None for client in clients)
    assert len(app.registry) == n


def _words(text: str) -> list[str]:
    return text.replace(".", " ").replace(",", " ").replace("!", " ").split()


def test_streams_of_concurrent_sessions_overlap(launch_app, clients):
    app, url = launch_app(offline_token_delay=0.02)
    n = 10
    barrier = threading.Barrier(n, timeout=START_TIMEOUT)

    def stream(i: int) -> tuple[float, float, list[str]]:
        client = Client(url, verbose=False)
        clients.append(client)
        barrier.wait()
        job = client.submit("Count to 50", api_name="/chat")
        deadline, first = time.monotonic() + TURN_TIMEOUT, None
        while not job.done():  # a bounded poll: iterating a Job waits without a limit
            assert time.monotonic() < deadline, "the stream did not finish in time"
            first = first or (time.monotonic() if job.outputs() else None)
            time.sleep(0.002)
        job.result(timeout=0)  # raises the turn's error, if any
        return first or time.monotonic(), time.monotonic(), [p for p in job.outputs() if isinstance(p, str)]

    with ThreadPoolExecutor(n) as pool:
        spans = list(pool.map(stream, range(n)))
    latest_start = max(start for start, _, _ in spans)
    earliest_end = min(end for _, end, _ in spans)
    assert latest_start < earliest_end, "streams ran one after another instead of together"
    for _, _, partials in spans:
        assert len(partials) > 1, "the reply did not stream"
        assert partials[-1] == " ".join(map(str, range(1, 51)))


def test_direct_run_without_session_is_closed(launch_app):
    app, url = launch_app()
    response = httpx.post(url + "gradio_api/run/chat", json={"data": ["My name is Mallory"]})
    assert response.status_code in (403, 404, 405)
    assert len(app.registry) == 0


def test_page_and_config_load_without_login_and_name_the_model(launch_app):
    app, url = launch_app()
    page = httpx.get(url)
    config = httpx.get(url + "config")
    assert page.status_code == 200 and config.status_code == 200
    assert "offline demo model" in config.text
    named = [d for d in config.json()["dependencies"] if d.get("api_name") == "chat"]
    assert len(named) == 1
