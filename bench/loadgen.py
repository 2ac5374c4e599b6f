"""A light asyncio load generator that speaks Gradio's queue protocol with httpx.

Why not gradio_client: one ``Client`` per simulated user costs the load generator about as much CPU as
the app spends serving it, and on a 2-core machine that distorts every throughput figure. This client
does per turn exactly what the browser does and nothing more:

1. once per simulated user: ``GET /`` with its own cookie jar (any cookie the app sets - e.g. an owner
   cookie - is sent back on every later request of that user);
2. per turn: ``POST /gradio_api/queue/join`` with ``fn_index`` (the endpoint's dependency id from
   ``/config``), ``trigger_id``, ``data`` and the user's ``session_hash``; then one
   ``GET /gradio_api/queue/data?session_hash=...`` SSE stream, reading ``process_generating`` messages
   (the first carries the full output value, the next ones diffs) until ``process_completed``.

Every turn records wall-clock timestamps (join sent, first token seen, each update, completion) so the
caller can compute time to first token, token gaps and wall times. Only loopback URLs are accepted.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

try:
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover
    import json

    _loads = json.loads

_SSL = ssl.create_default_context()  # one context for every client (creating one per client costs ms)
CANARY = re.compile(r"Canary(\d+)\.")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _check_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in _LOOPBACK:
        raise ValueError(f"load tests only target loopback, not {host!r}")


# ------------------------------------------------------------------------------------------------
# the endpoint


@dataclass(frozen=True)
class Endpoint:
    """How to call one named endpoint through the queue: what ``/config`` says about it."""

    api_prefix: str
    fn_index: int
    trigger_id: int | None
    input_kinds: tuple[str, ...]  # "message" or "state" (sent as null; the server keeps the value)
    output_index: int  # which output carries the reply text

    def data(self, message: str) -> list[Any]:
        return [message if kind == "message" else None for kind in self.input_kinds]


async def discover(base_url: str, api_name: str = "chat", client: httpx.AsyncClient | None = None, *,
                   text_in_out: bool = True) -> Endpoint:
    """Find ``api_name``'s dependency in ``/config``: its id (``fn_index``), trigger and I/O layout.
    ``text_in_out=False`` accepts any layout (for :meth:`User.call`)."""
    _check_loopback(base_url)
    own = client is None
    client = client or httpx.AsyncClient(timeout=30, trust_env=False)
    try:
        config = (await client.get(f"{base_url}/config")).raise_for_status().json()
    finally:
        if own:
            await client.aclose()
    kinds = {c["id"]: c.get("type") for c in config["components"]}
    for dep in config["dependencies"]:
        if dep.get("api_name") == api_name:
            inputs = tuple("state" if kinds.get(i) == "state" else "message" for i in dep["inputs"])
            outputs = [i for i in dep["outputs"] if kinds.get(i) != "state"]
            if text_in_out and (inputs.count("message") != 1 or not outputs):
                raise RuntimeError(f"endpoint {api_name!r} is not one-text-in, text-out: {dep}")
            targets = dep.get("targets") or [[None]]
            return Endpoint(api_prefix=config.get("api_prefix", "/gradio_api"), fn_index=dep["id"],
                            trigger_id=targets[0][0], input_kinds=inputs,
                            output_index=dep["outputs"].index(outputs[0]) if outputs else 0)
    raise RuntimeError(f"no dependency with api_name={api_name!r} in {base_url}/config")


def apply_diff(value: Any, diff: list) -> Any:
    """Gradio's output diff format ([action, path, value] edits), applied in place where possible."""
    for action, path, new in diff:
        if not path:
            if action == "replace":
                value = new
            elif action == "append":
                value = value + new
            else:
                raise ValueError(f"unsupported root action {action!r}")
            continue
        target = value
        for key in path[:-1]:
            target = target[key]
        last = path[-1]
        if action == "replace":
            target[last] = new
        elif action == "append":
            target[last] += new
        elif action == "add":
            if isinstance(target, list):
                target.insert(int(last), new)
            else:
                target[last] = new
        elif action == "delete":
            del target[int(last) if isinstance(target, list) else last]
        else:
            raise ValueError(f"unknown diff action {action!r}")
    return value


# ------------------------------------------------------------------------------------------------
# one simulated user


@dataclass
class Turn:
    session_hash: str
    message: str
    t_join: float = 0.0  # perf_counter() just before POST queue/join
    t_first: float | None = None  # first update with non-empty reply text
    t_last_change: float | None = None  # last update that changed the text
    t_done: float | None = None  # process_completed received
    first_tokens: int = 0  # tokens in the first non-empty update
    updates: list[float] = field(default_factory=list)  # times of updates that changed the text
    text: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.t_done is not None

    @property
    def tokens(self) -> int:
        return len(self.text.split())

    @property
    def ttft(self) -> float | None:
        return None if self.t_first is None else self.t_first - self.t_join

    @property
    def wall(self) -> float | None:
        return None if self.t_done is None else self.t_done - self.t_join

    @property
    def token_gap(self) -> float | None:
        """Mean time between streamed tokens after the first update (ideal: the model's token delay)."""
        if self.t_first is None or self.t_last_change is None or self.tokens <= self.first_tokens:
            return None
        return (self.t_last_change - self.t_first) / (self.tokens - self.first_tokens)


class User:
    """One simulated browser: its own HTTP client and cookie jar, one or more session hashes."""

    def __init__(self, base_url: str, *, timeout: float = 120.0):
        _check_loopback(base_url)
        self.base_url = base_url
        self.cookies: dict[str, str] = {}
        self.client = httpx.AsyncClient(
            base_url=base_url, verify=_SSL, trust_env=False,
            timeout=httpx.Timeout(timeout, connect=15.0, pool=timeout),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=2))
        self.status: int | None = None

    def _remember(self, response: httpx.Response) -> None:
        """Keep every cookie the app sets (HttpOnly/Secure flags included) to send back explicitly."""
        for raw in response.headers.get_list("set-cookie"):
            name, _, rest = raw.partition("=")
            value = rest.split(";", 1)[0]
            if name.strip():
                self.cookies[name.strip()] = value.strip()

    def _headers(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    async def open(self, path: str = "/") -> int:
        """The first request of a page load: gets whatever cookie the app hands out. Sent again once if the
        connection closed before any answer, as a browser retries a page load (seen in CI with every
        benchmark of ``run_all --quick`` starting at once on 2 cores: load average 7)."""
        try:
            response = await self.client.get(path, headers=self._headers())
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError):
            await asyncio.sleep(0.2)
            response = await self.client.get(path, headers=self._headers())
        self._remember(response)
        self.status = response.status_code
        return response.status_code

    async def get(self, path: str) -> httpx.Response:
        """A plain GET with this user's cookies (e.g. ``/healthz``, to see which worker answers them)."""
        response = await self.client.get(path, headers=self._headers())
        self._remember(response)
        return response

    async def call(self, endpoint: Endpoint, session_hash: str, data: list[Any]) -> list[Any]:
        """One event with these inputs, not streamed: its final output values (RuntimeError if it failed)."""
        prefix = endpoint.api_prefix
        body = {"data": data, "fn_index": endpoint.fn_index, "trigger_id": endpoint.trigger_id,
                "session_hash": session_hash, "event_data": None}
        response = await self.client.post(f"{prefix}/queue/join", json=body, headers=self._headers())
        self._remember(response)
        response.raise_for_status()
        async with self.client.stream("GET", f"{prefix}/queue/data", params={"session_hash": session_hash},
                                      headers=self._headers()) as stream:
            stream.raise_for_status()
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    msg = _loads(line[5:])
                    if msg.get("msg") == "process_completed":
                        if not msg.get("success", True):
                            raise RuntimeError(f"call failed: {str(msg.get('output'))[:200]}")
                        return (msg.get("output") or {}).get("data") or []
                    if msg.get("msg") == "unexpected_error":
                        raise RuntimeError(f"call failed: {msg.get('message')}")
        raise RuntimeError("stream closed before process_completed")

    async def turn(self, endpoint: Endpoint, session_hash: str, message: str, record: Turn | None = None) -> Turn:
        """One turn; pass ``record`` to keep what was measured even if the task is cancelled."""
        turn = record or Turn(session_hash, message)
        prefix = endpoint.api_prefix
        body = {"data": endpoint.data(message), "fn_index": endpoint.fn_index, "trigger_id": endpoint.trigger_id,
                "session_hash": session_hash, "event_data": None}
        value: Any = None
        seen_first = False
        phase = "join"
        turn.t_join = time.perf_counter()
        try:
            response = await self.client.post(f"{prefix}/queue/join", json=body, headers=self._headers())
            phase = "data"
            self._remember(response)
            if response.status_code != 200:
                turn.error = f"join HTTP {response.status_code}"
                return turn
            async with self.client.stream("GET", f"{prefix}/queue/data", params={"session_hash": session_hash},
                                          headers=self._headers()) as stream:
                self._remember(stream)
                if stream.status_code != 200:
                    turn.error = f"data HTTP {stream.status_code}"
                    return turn
                phase = "stream"
                async for line in stream.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    msg = _loads(line[5:])
                    kind = msg.get("msg")
                    if kind == "process_generating" or kind == "process_completed":
                        now = time.perf_counter()
                        if not msg.get("success", True):
                            turn.error = f"{kind}: {str(msg.get('output'))[:120]}"
                            return turn
                        data = (msg.get("output") or {}).get("data")
                        if data is None:
                            continue
                        if kind == "process_completed" or not seen_first:
                            value = data[endpoint.output_index]
                            seen_first = seen_first or kind == "process_generating"
                        else:
                            value = apply_diff(value, data[endpoint.output_index])
                        text = value if isinstance(value, str) else str(value or "")
                        if text != turn.text:
                            if turn.t_first is None and text.strip():
                                turn.t_first = now
                                turn.first_tokens = len(text.split())
                            turn.text = text
                            turn.t_last_change = now
                            turn.updates.append(now)
                        if kind == "process_completed":
                            turn.t_done = now
                            return turn
                    elif kind == "unexpected_error":
                        turn.error = f"unexpected_error: {msg.get('message')}"
                        return turn
                    elif kind == "close_stream":
                        break
            if turn.t_done is None and turn.error is None:
                turn.error = "stream closed before process_completed"
        except asyncio.CancelledError:
            turn.error = "cancelled (deadline)"
            raise
        except httpx.HTTPError as exc:
            turn.error = f"{type(exc).__name__} ({phase}): {exc}"[:160]  # phase: join, data (no answer), stream
        return turn

    async def aclose(self) -> None:
        await self.client.aclose()


def new_session_hash() -> str:
    return uuid.uuid4().hex[:11]


# ------------------------------------------------------------------------------------------------
# canary turns


def canary_message(i: int, words: int = 39) -> str:
    """A per-session message whose offline-model reply is ~50 tokens, every one tagged ``Canary<i>.``"""
    return "My name is " + " ".join(f"Canary{i}.{j}" for j in range(words))


def canary_reply(i: int, words: int = 39) -> str:
    name = " ".join(f"Canary{i}.{j}" for j in range(words))
    return f"Nice to meet you, {name}! I'll remember your name in this conversation."


def recall_reply(i: int, words: int = 39) -> str:
    return "Your name is " + " ".join(f"Canary{i}.{j}" for j in range(words)) + "."


def foreign_canaries(text: str, own: int) -> set[int]:
    """Canary ids in ``text`` that belong to another session."""
    return {int(m) for m in CANARY.findall(text)} - {own}
