"""Conversations outlive the tab, the cache and the process - and only for their owner."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from security.cookie_mode import COOKIE_NAME
from tests_support import ROOT, free_port


def cookie_header(client: Client) -> dict:
    return {"Cookie": f"{COOKIE_NAME}={client.cookies[COOKIE_NAME]}"}


def plant(client: Client) -> tuple[str, str]:
    name, item = f"Keep{uuid.uuid4().hex[:8]}", f"thing{uuid.uuid4().hex[:6]}"
    client.predict(f"My name is {name}", api_name="/chat")
    client.predict(f"Add 2 {item} to my cart", api_name="/chat")
    return name, item


def assert_remembers(client: Client, name: str, item: str) -> None:
    assert client.predict("What's my name?", api_name="/chat") == f"Your name is {name}."
    assert f"2 × {item}" in client.predict("Show my cart", api_name="/chat")


class ServerProcess:
    """The app as a user runs it: `python app_ng.py`, on a data directory, stopped by its PID."""

    def __init__(self, data_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "CMW_DATA_DIR": str(data_dir), "CMW_OFFLINE_TOKEN_DELAY": "0.001",
               "GRADIO_ANALYTICS_ENABLED": "False"}
        self.process = subprocess.Popen([sys.executable, "app_ng.py", "--port", str(self.port)], cwd=ROOT,
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "config", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("the app did not start within 60 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.mark.timeout(300)  # two process starts, each bounded at 60 s: over the default 120 s on a loaded machine
def test_restart_keeps_the_conversation_for_the_same_cookie(tmp_path):
    data = tmp_path / "data"
    server = ServerProcess(data)
    try:
        first = Client(server.url, verbose=False)
        name, item = plant(first)
        headers = cookie_header(first)
        [conversation] = first.predict(api_name="/conversations")
    finally:
        server.stop()
    assert (data / "cmw.sqlite").exists() and (data / "secret.key").exists()

    server = ServerProcess(data)
    try:
        back = Client(server.url, verbose=False, headers=headers)
        assert [c["id"] for c in back.predict(api_name="/conversations")] == [conversation["id"]]
        messages = back.predict(conversation["id"], api_name="/resume")
        assert messages[0] == {"role": "user", "content": f"My name is {name}"}
        assert_remembers(back, name, item)
        stranger = Client(server.url, verbose=False)
        assert stranger.predict(api_name="/conversations") == []
        with pytest.raises(Exception, match="not yours"):
            stranger.predict(conversation["id"], api_name="/resume")
    finally:
        server.stop()


def test_reload_resumes_with_the_tabs_reference_only_for_its_owner(launch_app):
    app, url = launch_app()
    tab = Client(url, verbose=False)
    name, item = plant(tab)
    [conversation] = tab.predict(api_name="/conversations")

    reloaded = Client(url, verbose=False, headers=cookie_header(tab))  # same owner, new session_hash
    assert reloaded.session_hash != tab.session_hash
    reloaded.predict(conversation["id"], api_name="/resume")
    assert_remembers(reloaded, name, item)

    new_tab = Client(url, verbose=False, headers=cookie_header(tab))  # same owner, no reference
    assert "don't know" in new_tab.predict("What's my name?", api_name="/chat")
    assert len(new_tab.predict(api_name="/conversations")) == 2  # the earlier one is one click away

    other = Client(url, verbose=False)  # another owner holding the reference
    with pytest.raises(Exception, match="not yours"):
        other.predict(conversation["id"], api_name="/resume")
    reply = other.predict("What's my name?", api_name="/chat")
    assert name not in reply and "don't know" in reply


def test_eviction_by_idle_ttl_loses_nothing(launch_app):
    app, url = launch_app(session_ttl=1.0)
    client = Client(url, verbose=False)
    name, item = plant(client)
    deadline = time.monotonic() + 10
    while len(app.registry) and time.monotonic() < deadline:
        time.sleep(0.2)  # the background sweeper releases the idle session
    assert len(app.registry) == 0
    assert_remembers(client, name, item)


def test_size_eviction_loses_nothing(launch_app):
    app, url = launch_app(session_max=2)
    first = Client(url, verbose=False)
    name, item = plant(first)
    for _ in range(3):
        Client(url, verbose=False).predict("hello", api_name="/chat")
    assert app.registry.peek(first.session_hash) is None
    assert_remembers(first, name, item)
