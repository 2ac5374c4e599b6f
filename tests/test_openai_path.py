"""The real ChatOpenAI path, end to end, against the local fake OpenAI-compatible server."""

from __future__ import annotations

from typing import Iterator

import pytest
from gradio_client import Client
from langchain_openai import ChatOpenAI

from fake_openai import FakeOpenAIServer


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    for name in ("NO_PROXY", "no_proxy"):  # never route the loopback server through a proxy
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def openai_app(server, launch_app) -> str:
    """The real app on ChatOpenAI -> fake server; streams every token (stream_interval=0)."""
    _, url = launch_app(openai_api_key="test-key", openai_base_url=server.base_url, model_name="fake-model",
                        stream_interval=0.0)
    return url


def chat(client: Client, text: str) -> list[str]:
    """Send one /chat message; return every streamed output, the final reply last."""
    job = client.submit(text, api_name="/chat")
    job.result(timeout=60)
    return [out for out in job.outputs() if isinstance(out, str)]


def user_texts(body: dict) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "user"]


def test_build_chat_model_is_chat_openai(server):
    from agent.models import build_chat_model
    from settings import Settings

    settings = Settings.from_env({"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": server.base_url,
                                  "CMW_MODEL": "fake-model"})
    choice = build_chat_model(settings)
    assert isinstance(choice.model, ChatOpenAI)
    assert "fake-model" in choice.label and server.base_url in choice.label

    # The configured model really talks to the fake server: streamed tokens, then the usage chunk.
    chunks = list(choice.model.stream("hi"))
    assert "".join(c.text for c in chunks) == "Echo: hi"
    assert len([c for c in chunks if c.text]) > 1
    assert sum(c.usage_metadata["output_tokens"] for c in chunks if c.usage_metadata) > 0
    (body,) = server.requests
    assert body["model"] == "fake-model" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_fake_server_non_stream_completion(server):
    model = ChatOpenAI(model="fake-model", api_key="test-key", base_url=server.base_url, max_retries=0)
    reply = model.invoke("plain request")
    assert reply.text == "Echo: plain request"
    assert reply.usage_metadata["total_tokens"] > 0
    assert server.requests[-1]["stream"] is False


def test_app_streams_plain_text(openai_app, server):
    outputs = chat(Client(openai_app, verbose=False), "hello there")
    assert outputs[-1] == "Echo: hello there"
    partials = [out for out in outputs if out != outputs[-1]]
    assert partials, f"expected streamed partial replies, got {outputs!r}"
    assert all(outputs[-1].startswith(p) for p in partials)
    (body,) = server.requests
    assert body["messages"][0]["role"] == "system"
    assert user_texts(body) == ["hello there"]


def test_app_tool_call_round_trip_and_sessions_stay_apart(openai_app, server):
    reply = chat(Client(openai_app, verbose=False), "Add 3 apples to my cart")[-1]
    assert "Added 3 × Apples" in reply

    first, second = server.requests
    assert {"add_to_cart", "remove_from_cart", "view_cart", "clear_cart", "session_info"} <= {
        tool["function"]["name"] for tool in first["tools"]}
    assert first["messages"][-1] == {"role": "user", "content": "Add 3 apples to my cart"}
    assistant, tool_result = second["messages"][-2:]
    (call,) = assistant["tool_calls"]
    assert call["function"]["name"] == "add_to_cart"
    assert call["function"]["arguments"] and '"quantity": 3' in call["function"]["arguments"]
    assert tool_result["role"] == "tool" and tool_result["tool_call_id"] == call["id"]
    assert "Added 3 × Apples" in tool_result["content"]

    # A second client is a second session: neither the reply nor what reaches the model mentions apples.
    other = chat(Client(openai_app, verbose=False), "What is in my cart?")[-1]
    assert other == "Echo: What is in my cart?"
    third = server.requests[2]
    assert user_texts(third) == ["What is in my cart?"]
    assert [m["role"] for m in third["messages"]] == ["system", "user"]
    assert "apple" not in str(third["messages"]).lower()
    assert len(server.requests) == 3
