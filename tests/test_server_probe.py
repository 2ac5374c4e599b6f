"""The start-up probe: setup mistakes are named at start, in one sentence, instead of failing every turn."""

from __future__ import annotations

import pytest

from agent.server_probe import probe, short_model_name
from settings import NO_KEY, Settings
from tests_support import free_port


def settings_for(base_url: str, model: str = "") -> Settings:
    env = {"OPENAI_BASE_URL": base_url, **({"CMW_MODEL": model} if model else {})}
    return Settings.from_env(env)


def test_a_base_url_alone_means_a_server_of_ones_own_without_a_key():
    settings = settings_for("http://127.0.0.1:8000/v1/")
    assert settings.openai_base_url == "http://127.0.0.1:8000/v1"
    assert settings.openai_api_key == NO_KEY and settings.model_name == "" and not settings.uses_offline_model
    assert Settings.from_env({"OPENAI_API_KEY": "k"}).model_name == "gpt-4o-mini"  # OpenAI itself
    assert Settings.from_env({"OPENAI_BASE_URL": "http://x/v1", "CMW_MODEL": "offline"}).uses_offline_model


def test_the_only_model_served_is_picked_with_its_window(make_server):
    server = make_server(models=("/models/SmolLM2-135M-Instruct-Q8_0.gguf",), context_tokens=4096)
    facts = probe(settings_for(server.base_url))
    assert facts.model == "/models/SmolLM2-135M-Instruct-Q8_0.gguf"
    assert facts.context_tokens == 4096 and facts.tools is True and facts.note is None
    assert short_model_name(facts.model) == "SmolLM2-135M-Instruct-Q8_0.gguf"
    assert short_model_name("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama/Llama-3.1-8B-Instruct"


def test_a_url_without_v1_is_named_at_start(make_server):
    server = make_server()
    root = server.base_url.removesuffix("/v1")
    with pytest.raises(SystemExit, match=f"OPENAI_BASE_URL={root} lacks /v1: set OPENAI_BASE_URL={root}/v1"):
        probe(settings_for(root, "fake-model"))


def test_an_unknown_model_or_an_ambiguous_server_is_named_at_start(make_server):
    server = make_server(models=("a-model", "b-model"))
    with pytest.raises(SystemExit, match="CMW_MODEL='gpt-4o-mini' is not served at .* \\(it serves: a-model, b-model\\)"):
        probe(settings_for(server.base_url, "gpt-4o-mini"))
    with pytest.raises(SystemExit, match="Set CMW_MODEL to the model to use at .* \\(it serves: a-model, b-model\\)"):
        probe(settings_for(server.base_url))
    assert probe(settings_for(server.base_url, "b-model")).model == "b-model"


def test_a_server_rejecting_tools_is_found_at_start(make_server):
    server = make_server(quirks={"reject_tools"})
    facts = probe(settings_for(server.base_url, "fake-model"))
    assert facts.tools is False and "cart is unavailable" in facts.note
    assert server.requests == [] and len(server.probes) == 1


def test_an_unreachable_server_is_a_warning_unless_the_model_is_unknown():
    url = f"http://127.0.0.1:{free_port()}/v1"
    facts = probe(settings_for(url, "some-model"))
    assert facts.model == "some-model" and "could not be reached" in facts.note
    with pytest.raises(SystemExit, match="cannot be reached .* start the server first, or set CMW_MODEL"):
        probe(settings_for(url))
