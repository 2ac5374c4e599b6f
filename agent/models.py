"""Choose the chat model: ChatOpenAI when a key is configured, the offline model otherwise.

The model object is shared by every session and holds configuration only.
"""

from __future__ import annotations

from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel

from agent.offline_model import OfflineChatModel
from settings import Settings


@dataclass(frozen=True)
class ModelChoice:
    model: BaseChatModel
    label: str  # what the UI shows
    how_to_switch: str


def build_chat_model(settings: Settings) -> ModelChoice:
    if settings.uses_offline_model:
        return ModelChoice(
            OfflineChatModel(token_delay=settings.offline_token_delay),
            "offline demo model (built in, no API key needed)",
            "To use a real model, set OPENAI_API_KEY (and optionally OPENAI_BASE_URL and CMW_MODEL) and restart.",
        )
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(model=settings.model_name, api_key=settings.openai_api_key,
                       base_url=settings.openai_base_url, streaming=True, stream_usage=True,
                       max_retries=1, timeout=120)
    where = f" at {settings.openai_base_url}" if settings.openai_base_url else ""
    return ModelChoice(model, f"{settings.model_name} via an OpenAI-compatible API{where}",
                       "To use the offline demo model instead, set CMW_MODEL=offline and restart.")
