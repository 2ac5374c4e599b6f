"""A session_hash stays its owner's for as long as Gradio remembers it; limits at every door.

Attacks that worked while the hash -> owner binding lived in the evictable live-session cache: a flood
of fresh hashes or an idle TTL freed a streaming victim's hash for the attacker; an unloaded tab's hash
could be bound again while Gradio still held its state; event ids worked as bearer tokens; uploads,
oversized inputs and the monitoring dashboard were open; a newline in a path forged a log line.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from contextlib import contextmanager
from typing import Iterator

import httpx
import pytest
from gradio_client import Client

from gradio_compat import holds_session_state
from memory.bindings import Bound, SessionBindings
from tests_support import wait_until

LONG = 150  # words in the victim's long turn


@functools.lru_cache(maxsize=None)
def fn_index(url: str, api_name: str) -> int:
    config = httpx.get(url + "config").json()
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)


def join(http: httpx.Client, url: str, session_hash: str, text: str = "hi", api_name: str = "chat"):
    """Start an event of ``api_name`` for ``session_hash`` (a cheap one: ``conversations``, no input)."""
    return http.post(url + "gradio_api/queue/join", json={
        "data": [text] if api_name == "chat" else [], "fn_index": fn_index(url, api_name), "trigger_id": None,
        "session_hash": session_hash, "event_data": None})


@contextmanager
def attacker(url: str) -> Iterator[httpx.Client]:
    """A client with its own valid owner cookie (from /config), like anyone who opens the app."""
    with httpx.Client(timeout=15) as http:
        http.get(url + "config")
        yield http


def test_the_table_refuses_new_bindings_when_full_and_evicts_nobody():
    clock = [0.0]
    bindings = SessionBindings(maxsize=2, idle_ttl=10, timer=lambda: clock[0])
    assert bindings.bind("victim", "v") is Bound.YES and bindings.bind("a1", "a") is Bound.YES
    assert bindings.bind("a2", "a") is Bound.FULL
    assert bindings.owner_of("victim") == "v" and bindings.bind("victim", "a") is Bound.TAKEN
    bindings.stream_opened("victim")
    clock[0] = 11  # idle past the TTL: a1 goes, the streaming victim stays
    forgotten = []
    bindings.on_forget = forgotten.append
    assert bindings.bind("a3", "a") is Bound.YES and forgotten == ["a1"]
    assert bindings.owner_of("victim") == "v"


def test_a_flood_of_fresh_hashes_moves_no_binding_of_a_streaming_victim(launch_app):
    app, url = launch_app(session_max=50, new_sessions_per_ip=0, new_sessions_per_owner=0)
    victim = Client(url, verbose=False)
    victim.predict("My name is Flooded", api_name="/chat")
    job = victim.submit(f"Count to {LONG}", api_name="/chat")
    wait_until(job.outputs, "the victim's stream never started")
    with attacker(url) as http:
        statuses = [join(http, url, uuid.uuid4().hex[:11], api_name="conversations").status_code for _ in range(600)]
        steal = join(http, url, victim.session_hash, "What's my name?")
    assert 503 in statuses  # the table filled up: new bindings refused, nobody evicted
    assert steal.status_code == 403
    assert job.result(timeout=60).split()[-1] == str(LONG)  # the victim's stream finished, whole
    assert victim.predict("What's my name?", api_name="/chat") == "Your name is Flooded."


def test_new_bindings_are_rate_limited_per_address(launch_app):
    app, url = launch_app(new_sessions_per_ip=20, new_sessions_per_owner=0)
    with attacker(url) as http:
        answers = [join(http, url, uuid.uuid4().hex[:11], api_name="conversations") for _ in range(40)]
    refused = [a for a in answers if a.status_code == 429]
    assert len(refused) == 20 and "Too many new sessions" in refused[0].json()["detail"]
    assert len(app.registry.bindings) <= 20 + 1


def test_a_stream_is_not_stolen_after_the_idle_ttl(launch_app):
    app, url = launch_app(session_ttl=1.0, offline_token_delay=0.02)
    victim = Client(url, verbose=False)
    victim.predict("My name is Patient", api_name="/chat")
    job = victim.submit(f"Count to {LONG}", api_name="/chat")  # about 3 s, three TTLs
    wait_until(lambda: len(job.outputs()) > 0, "the victim's stream never started")
    stolen = threading.Event()

    def try_steal():
        with attacker(url) as http:
            while not job.done():
                app.registry.expire()  # what the sweeper does
                if join(http, url, victim.session_hash, "What's my name?").status_code == 200:
                    stolen.set()
                    return

    thief = threading.Thread(target=try_steal, daemon=True)
    thief.start()
    assert job.result(timeout=60).split()[-1] == str(LONG)
    thief.join(30)
    assert not stolen.is_set()


def test_an_unloaded_tab_leaves_no_state_and_its_hash_stays_taken(launch_app, monkeypatch):
    app, url = launch_app()
    victim = Client(url, verbose=False)
    victim.predict("My card PIN is 8722", api_name="/chat")
    cookie = dict(victim.cookies)
    assert holds_session_state(app.demo, victim.session_hash)
    with httpx.Client(timeout=5, cookies=cookie) as http:  # the tab's heartbeat opens, then the tab closes
        with http.stream("GET", url + f"gradio_api/heartbeat/{victim.session_hash}") as beat:
            assert beat.status_code == 200
    wait_until(lambda: app.registry.peek(victim.session_hash) is None, "unload never ran")
    wait_until(lambda: not holds_session_state(app.demo, victim.session_hash), "Gradio kept the tab's state")
    with attacker(url) as http:
        assert join(http, url, victim.session_hash, "What's my name?").status_code == 403


def test_oversized_input_oversized_uploads_and_monitoring_are_refused(launch_app):
    app, url = launch_app(max_upload_mb=0.01)
    with attacker(url) as http:
        huge = join(http, url, uuid.uuid4().hex[:11], "x" * 200_000)
        upload = http.post(url + "gradio_api/upload", files={"files": ("a.txt", b"x" * 20_000)})
        monitoring = [http.get(url + path) for path in ("monitoring", "monitoring/summary")]
    cookieless = httpx.post(url + "gradio_api/upload", files={"files": ("a.txt", b"x")},
                            headers={"sec-fetch-site": "same-origin"})
    assert huge.status_code == 413
    assert upload.status_code == 413 and "maximum allowed size" in upload.text
    assert cookieless.status_code == 403 and "owner cookie" in cookieless.json()["detail"]
    assert [m.status_code for m in monitoring] == [404, 404]


def test_event_ids_are_not_bearer_tokens(launch_app):
    app, url = launch_app(offline_token_delay=0.02)
    with httpx.Client(timeout=30) as victim:
        victim.get(url + "config")
        victim_hash = uuid.uuid4().hex[:11]
        event_id = join(victim, url, victim_hash, f"Count to {LONG}").json()["event_id"]
        with attacker(url) as http:
            own_hash = uuid.uuid4().hex[:11]
            assert join(http, url, own_hash, "hello").status_code == 200
            read = http.get(url + f"gradio_api/call/chat/{event_id}")
            cancel = http.post(url + "gradio_api/cancel", json={"session_hash": own_hash, "fn_index": 0,
                                                                  "event_id": event_id})
            feed = http.post(url + f"gradio_api/stream/{event_id}", json={"data": [], "session_hash": own_hash})
            close = http.post(url + f"gradio_api/stream/{event_id}/close")
        assert [r.status_code for r in (read, cancel, feed, close)] == [403, 403, 403, 403]
        with victim.stream("GET", url + "gradio_api/queue/data", params={"session_hash": victim_hash}) as data:
            text = "".join(data.iter_text())
    assert str(LONG) in text and "process_completed" in text  # the victim's turn ran to the end


def test_request_text_cannot_forge_log_lines(launch_app, caplog):
    app, url = launch_app()
    victim = Client(url, verbose=False)
    victim.predict("hello", api_name="/chat")
    caplog.set_level(logging.WARNING, logger="cmw")
    with attacker(url) as http:
        refused = http.get(url + "gradio_api/x%0A2026-12-01 INFO cmw: all good",
                           params={"session_hash": victim.session_hash})
    assert refused.status_code == 403
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("cmw")]
    assert any("refused" in line for line in lines)
    assert not any("\n" in line for line in lines)
