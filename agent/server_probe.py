"""At start: ask the model server what it serves, before anyone's first turn fails.

``GET <base>/models`` names the model (the only one served, when ``CMW_MODEL`` is unset) and often its
context window (vLLM's ``max_model_len``, llama.cpp's ``meta.n_ctx_train``). A URL that lacks ``/v1``,
a model the server does not serve, or a server serving several models with none chosen stops the app
with one sentence saying what to set. For a server of one's own, a one-token request with a tool shows
whether it accepts ``tools`` (vLLM needs ``--enable-auto-tool-choice --tool-call-parser ...``, llama.cpp
``--jinja``); if not, the app runs without tools and says the cart is unavailable.

An unreachable server is only a warning: it may still be starting, and each turn says so until it is up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import httpx

from agent.model_errors import SENTENCES, is_tools_rejection
from settings import Settings

log = logging.getLogger("cmw.probe")
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class ServerFacts:
    model: str  # the model name to use
    context_tokens: int | None = None  # as reported by the server
    tools: bool | None = None  # None: not tried
    note: str | None = None  # what the banner should add


class _Rejected(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(f"HTTP {status}: {text[:300]}")
        self.status_code = status


def short_model_name(name: str) -> str:
    """A model path (``/models/SmolLM2-135M-Instruct-Q8_0.gguf``) shown by its file name only."""
    return PurePosixPath(name).name if "/" in name and (name.startswith("/") or name.endswith(".gguf")) else name


def _context_of(entry: dict[str, Any]) -> int | None:
    for value in (entry.get("max_model_len"), (entry.get("meta") or {}).get("n_ctx_train"),
                  entry.get("context_length"), entry.get("context_window")):
        if isinstance(value, int) and value > 0:
            return value
    return None


def _get_models(client: httpx.Client, base: str) -> list[dict] | None:
    """The server's model list; None when it has no such route."""
    response = client.get(f"{base}/models")
    if response.status_code == 404:
        if not base.endswith("/v1") and client.get(f"{base}/v1/models").status_code == 200:
            raise SystemExit(f"OPENAI_BASE_URL={base} lacks /v1: set OPENAI_BASE_URL={base}/v1 and restart.")
        return None
    if response.status_code in (401, 403):
        raise _Rejected(response.status_code, response.text)
    response.raise_for_status()
    data = response.json().get("data")
    return [m for m in data if isinstance(m, dict) and m.get("id")] if isinstance(data, list) else None


def _choose(settings: Settings, models: list[dict] | None) -> tuple[str, int | None]:
    base = settings.openai_base_url
    ids = [m["id"] for m in models or []]
    if not settings.model_name:
        if len(ids) == 1:
            log.info("the model server serves one model, %s: using it", ids[0])
            return ids[0], _context_of(models[0])
        listed = f"it serves: {', '.join(ids)}" if ids else "it lists no models"
        raise SystemExit(f"Set CMW_MODEL to the model to use at {base} ({listed}).")
    if models is not None and settings.model_name not in ids:
        listed = ", ".join(ids) or "nothing"
        raise SystemExit(f"CMW_MODEL={settings.model_name!r} is not served at {base} (it serves: {listed}); "
                         "fix CMW_MODEL and restart.")
    entry = next((m for m in models or [] if m["id"] == settings.model_name), {})
    return settings.model_name, _context_of(entry)


def _accepts_tools(client: httpx.Client, settings: Settings, model: str) -> bool | None:
    ping = {"type": "function", "function": {"name": "ping", "description": "Answer a ping.",
                                             "parameters": {"type": "object", "properties": {}}}}
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}], "tools": [ping],
            "max_tokens": 1, "stream": False}
    try:
        response = client.post(f"{settings.openai_base_url}/chat/completions", json=body,
                               timeout=settings.model_timeout)
    except httpx.HTTPError as error:
        log.warning("could not check whether the model server accepts tools: %s", error)
        return None
    if response.status_code < 400:
        return True
    if is_tools_rejection(_Rejected(response.status_code, response.text)):
        log.warning("the model server rejects tools (HTTP %d: %s); the cart is unavailable",
                    response.status_code, response.text[:300])
        return False
    log.warning("tool check answered HTTP %d: %s", response.status_code, response.text[:300])
    return None


def probe(settings: Settings) -> ServerFacts:
    """What the configured OpenAI-compatible server serves (for the offline model: nothing to ask)."""
    if settings.uses_offline_model or not settings.probe_model_server:
        return ServerFacts(settings.model_name or "unknown")
    base = settings.openai_base_url or "https://api.openai.com/v1"
    headers = {"Authorization": f"Bearer {settings.openai_api_key}"}
    with httpx.Client(headers=headers, timeout=PROBE_TIMEOUT) as client:
        try:
            models = _get_models(client, base)
        except SystemExit:
            raise
        except _Rejected as error:
            log.warning("the model server refused the API key when listing models: %s", error)
            return ServerFacts(settings.model_name or "unknown", note=SENTENCES["auth"])
        except (httpx.HTTPError, ValueError) as error:
            if not settings.model_name:
                raise SystemExit(f"The model server at {base} cannot be reached ({error}), so the model to use "
                                 "is unknown: start the server first, or set CMW_MODEL.") from None
            log.warning("the model server at %s cannot be reached at start: %s", base, error)
            return ServerFacts(settings.model_name, note="The model server could not be reached at start.")
        model, context = _choose(settings, models)
        tools = _accepts_tools(client, settings, model) if settings.openai_base_url and \
            "api.openai.com" not in settings.openai_base_url else None
    note = "The model server does not accept tools, so the cart is unavailable." if tools is False else None
    return ServerFacts(model, context, tools, note)
