"""Each way a model server says no becomes the one sentence a person can act on."""

from __future__ import annotations

import httpx
import openai
import pytest

from agent.model_errors import SENTENCES, MalformedToolCall, ModelSilent, model_failure
from ui.failures import SOMETHING_FAILED, STORE_DOWN, turn_failure

REQUEST = httpx.Request("POST", "http://127.0.0.1:8000/v1/chat/completions")


def status_error(status: int, message: str) -> openai.APIStatusError:
    """What the openai client raises for an HTTP error answer with this message."""
    response = httpx.Response(status, request=REQUEST, json={"error": {"message": message}})
    return openai.OpenAI(api_key="k", base_url="http://127.0.0.1:8000/v1")._make_status_error(
        message, body={"message": message}, response=response)


@pytest.mark.parametrize("error, kind", [
    (openai.APIConnectionError(request=REQUEST), "unreachable"),
    (openai.APITimeoutError(request=REQUEST), "timeout"),
    (ModelSilent(60, first=True), "timeout"),
    (status_error(401, "Incorrect API key provided"), "auth"),
    (status_error(403, "forbidden"), "auth"),
    (status_error(404, "The model `gpt-5` does not exist"), "model_not_found"),
    (status_error(429, "Rate limit reached"), "rate_limited"),
    (status_error(500, "Internal server error"), "server_error"),
    # context windows, as OpenAI / vLLM, llama-server and llama-cpp-python word them
    (status_error(400, "This model's maximum context length is 4096 tokens. However, you requested 5000"), "context"),
    (status_error(400, "the request exceeds the available context size, try increasing it"), "context"),
    (status_error(400, "Requested tokens (5000) exceed context window of 4096"), "context"),
    # tools refused: vLLM without its flags, older llama-server without --jinja, an Ollama model without tools
    (status_error(400, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'),
     "tools"),
    (status_error(500, "tools param requires --jinja flag"), "tools"),
    (status_error(400, "registry.ollama.ai/library/gemma:2b does not support tools"), "tools"),
    (ValueError("No generations found in stream."), "empty"),
    (MalformedToolCall("bad"), "malformed_tool_call"),
    (httpx.RemoteProtocolError("peer closed connection without sending complete message body"), "dropped"),
])
def test_each_failure_has_its_sentence(error, kind):
    failure = model_failure(error)
    assert failure.kind == kind and failure.sentence == SENTENCES[kind]
    assert turn_failure(error) == failure


def test_a_cause_deeper_in_the_chain_counts_and_other_failures_are_not_the_models():
    import sqlite3

    try:
        try:
            raise openai.APIConnectionError(request=REQUEST)
        except openai.APIConnectionError as error:
            raise RuntimeError("graph step failed") from error
    except RuntimeError as wrapped:
        assert model_failure(wrapped).kind == "unreachable"
    assert model_failure(sqlite3.OperationalError("disk I/O error")) is None
    assert turn_failure(sqlite3.OperationalError("disk I/O error")).sentence == STORE_DOWN
    assert model_failure(RuntimeError("a bug")) is None
    assert turn_failure(RuntimeError("a bug")).sentence == SOMETHING_FAILED


def test_every_sentence_says_what_happened_then_what_to_do():
    for sentence in SENTENCES.values():  # the rule of tests/test_failures.py, for every model failure
        assert sentence.count(".") >= 2 and ("try again" in sentence.lower() or "retry" in sentence.lower()), sentence
