"""Choose the chat model: ChatOpenAI when a server is configured, the offline model otherwise.

The model object is shared by every session and holds configuration only; so does the
:class:`~agent.hygiene.ModelServer` beside it (what the app knows about the server: window, tools).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from langchain_core.language_models import BaseChatModel

from agent.hygiene import DEFAULT_CONTEXT_TOKENS, ModelServer
from agent.offline_model import OfflineChatModel
from agent.server_probe import probe, short_model_name
from settings import Settings


@dataclass(frozen=True)
class ModelChoice:
    model: BaseChatModel
    label: str  # what the UI shows
    how_to_switch: str
    server: ModelServer


def build_chat_model(settings: Settings) -> ModelChoice:
    if settings.uses_offline_model:
        return ModelChoice(
            OfflineChatModel(token_delay=settings.offline_token_delay),
            "offline demo model (built in, no API key needed)",
            "To use a real model, set OPENAI_API_KEY (and optionally OPENAI_BASE_URL and CMW_MODEL) and restart.",
            ModelServer(settings.context_tokens or DEFAULT_CONTEXT_TOKENS, settings.max_output_tokens))
    from agent.openai_compat import TolerantChatOpenAI

    facts = probe(settings)
    server = ModelServer(settings.context_tokens or facts.context_tokens or DEFAULT_CONTEXT_TOKENS,
                         settings.max_output_tokens, tools=facts.tools is not False)
    # httpx's read timeout only backs up the app's own first-chunk and between-chunk timeouts.
    timeout = httpx.Timeout(max(settings.model_timeout, settings.model_chunk_timeout), connect=10.0)
    model = TolerantChatOpenAI(model=facts.model, api_key=settings.openai_api_key,
                               base_url=settings.openai_base_url, streaming=True, stream_usage=True,
                               max_retries=settings.model_retries, timeout=timeout,
                               max_tokens=settings.max_output_tokens, stream_chunk_timeout=None,
                               first_chunk_timeout=settings.model_timeout,
                               chunk_timeout=settings.model_chunk_timeout)
    where = f" at {settings.openai_base_url}" if settings.openai_base_url else ""
    label = f"{short_model_name(facts.model)} via an OpenAI-compatible API{where}"
    if facts.note:
        label += f" ({facts.note})"
    return ModelChoice(model, label, "To use the offline demo model instead, set CMW_MODEL=offline and restart.",
                       server)
