"""The public API is a contract: its names, and /delete_all doing what it says for its caller only."""

from __future__ import annotations

import httpx
from gradio_client import Client

PUBLIC = {"chat", "upload", "conversations", "resume", "delete_all"}


def test_the_public_endpoints_have_their_documented_names(launch_app):
    app, url = launch_app()
    config = httpx.get(url + "config").json()
    names = {d.get("api_name") for d in config["dependencies"]}
    assert PUBLIC <= names, f"missing: {PUBLIC - names}"
    assert not {n for n in names if n and n.rstrip("_0123456789") in PUBLIC and n not in PUBLIC}, names


def test_delete_all_over_the_api_deletes_the_callers_data_only(launch_app):
    app, url = launch_app()
    mine, theirs = Client(url, verbose=False), Client(url, verbose=False)
    mine.predict("My name is Deleted", api_name="/chat")
    theirs.predict("My name is Kept", api_name="/chat")
    answer = mine.predict(api_name="/delete_all")
    assert answer.startswith("All your data was deleted: 1 conversation(s)")
    assert mine.predict(api_name="/conversations") == []
    assert "don't know" in mine.predict("What's my name?", api_name="/chat")
    assert theirs.predict("What's my name?", api_name="/chat") == "Your name is Kept."
