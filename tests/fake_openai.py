"""A tiny fake OpenAI-compatible Chat Completions server (stdlib only) for exercising ChatOpenAI offline.

    with FakeOpenAIServer() as server:
        ChatOpenAI(base_url=server.base_url, api_key="test-key", model="fake-model")
        ...
        server.requests  # every request body received, in order

Replies are a pure function of the request (no counters), so concurrent sessions get predictable answers:
- last message from a user saying "add N <item> to my cart", and a tool named ``add_to_cart`` offered:
  a tool call ``add_to_cart({"item": <item>, "quantity": N})``;
- last message a ``tool`` result: "Done: <tool result>";
- otherwise: "Echo: <last user text>".
Streaming requests get SSE chunks (text token by token, tool-call arguments in fragments, and a final
usage chunk when ``stream_options.include_usage`` is set); other requests get one completion JSON.
``GET /v1/models`` lists ``models`` (with ``max_model_len`` when ``context_tokens`` is set, unless
``lists_context=False``, like llama-cpp-python and Ollama).

Quirks real servers have, to prove the app survives them:

- persistent, ``FakeOpenAIServer(quirks={...})``: ``repeat_tool_name`` (the tool name in every streamed
  chunk, as llama-cpp-python's chatml-function-calling does), ``reject_null_content`` (HTTP 500 when an
  assistant message has ``content: null``), ``reject_tools`` (HTTP 400 with vLLM's message when ``tools``
  is sent); ``context_tokens=N``: a request over N tokens (chars / 4) gets OpenAI's context error;
- one-shot, ``server.fail_next(fault, ...)``, one per chat request in order: ``hang`` (headers, then
  only keep-alive comments), ``context`` (context error), ``no_finish`` (part of the text, then the
  stream ends without a finish reason), ``length`` (part of the text, ``finish_reason: length``),
  ``stall`` (part of the text, then only keep-alive comments), ``500`` (an internal error; the next
  request is served normally), ``bad_tool_json`` (a tool call whose
  arguments are not JSON), ``empty`` (a stream with no chunks), ``401``, ``404``, ``429``.

Tool probes (a one-token request offering only a ``ping`` tool, see agent/server_probe.py) are answered
but recorded in ``probes``, not ``requests``, and never consume a one-shot fault.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTEXT_ERROR = {"error": {"message": "This model's maximum context length is 4096 tokens. However, you "
                                      "requested 5000 tokens. Please reduce the length of the messages.",
                           "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}
VLLM_TOOLS_ERROR = {"object": "error", "type": "BadRequestError", "code": 400,
                    "message": '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser '
                               "to be set"}
ERRORS = {
    "500": (500, {"error": {"message": "Internal server error", "type": "internal_error"}}),
    "401": (401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                            "code": "invalid_api_key"}}),
    "404": (404, {"error": {"message": "The model `fake-model` does not exist", "type": "invalid_request_error",
                            "code": "model_not_found"}}),
    "429": (429, {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}),
    "context": (400, CONTEXT_ERROR),
}

ADD_TO_CART = re.compile(r"\badd\s+(\d+)\s+(.+?)\s+to\s+(?:my\s+)?cart\b", re.IGNORECASE)


def _text(content) -> str:
    """Message content as plain text (a string, or a list of content parts)."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def tokens(text: str) -> list[str]:
    """Split text into word-ish tokens that join back to the original text."""
    return re.findall(r"\s*\S+", text) or [text]


def script(body: dict) -> dict:
    """The scripted reply: ``{"text": str}`` or ``{"tool_call": {"id", "name", "arguments"}}``."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {"role": "user", "content": ""}
    if last.get("role") == "tool":
        return {"text": f"Done: {_text(last.get('content'))}"}
    user_text = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    offered = {t.get("function", {}).get("name") for t in body.get("tools") or []}
    match = ADD_TO_CART.search(user_text) if last.get("role") == "user" else None
    if match and "add_to_cart" in offered:
        digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]
        args = json.dumps({"item": match.group(2), "quantity": int(match.group(1))})
        return {"tool_call": {"id": f"call_{digest}", "name": "add_to_cart", "arguments": args}}
    return {"text": f"Echo: {user_text}"}


def _usage(body: dict, reply: dict) -> dict:
    prompt = len(json.dumps(body.get("messages") or [])) // 4
    completion = len(tokens(reply["text"])) if "text" in reply else 8
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            return self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
        listed = self.server.context_tokens if self.server.lists_context else None
        extra = {"max_model_len": listed} if listed else {}
        self._send_json(200, {"object": "list", "data": [
            {"id": name, "object": "model", "owned_by": "fake", **extra} for name in self.server.models]})

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        probe = [t.get("function", {}).get("name") for t in body.get("tools") or []] == ["ping"]
        with self.server.lock:
            (self.server.probes if probe else self.server.requests).append(body)
            fault = self.server.faults.popleft() if self.server.faults and not probe else None
        quirks = self.server.quirks
        if "reject_tools" in quirks and body.get("tools"):
            return self._send_json(400, VLLM_TOOLS_ERROR)
        if "reject_null_content" in quirks and any(
                m.get("role") == "assistant" and m.get("content") is None for m in body.get("messages") or []):
            return self._send_json(500, {"error": {"message": "Expected content to be a string",
                                                   "type": "internal_server_error"}})
        if self.server.context_tokens and len(json.dumps(body.get("messages"))) // 4 > self.server.context_tokens:
            fault = "context"
        if fault in ERRORS:
            return self._send_json(*ERRORS[fault])
        reply = script(body)
        if fault == "bad_tool_json":
            reply = {"tool_call": {"id": "call_bad", "name": "add_to_cart", "arguments": '{"item": "apples", quantity: two}'}}
        if body.get("stream"):
            self._stream(body, reply, fault)
        else:
            self._send_json(200, self._completion(body, reply))

    def _send_json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _base(self, body: dict, kind: str) -> dict:
        return {"id": "chatcmpl-fake", "object": kind, "created": 0, "model": body.get("model", "fake-model"),
                "system_fingerprint": "fake"}

    def _completion(self, body: dict, reply: dict) -> dict:
        message: dict = {"role": "assistant", "content": reply.get("text")}
        if "tool_call" in reply:
            call = reply["tool_call"]
            message["tool_calls"] = [{"id": call["id"], "type": "function",
                                      "function": {"name": call["name"], "arguments": call["arguments"]}}]
        finish = "tool_calls" if "tool_call" in reply else "stop"
        return {**self._base(body, "chat.completion"), "usage": _usage(body, reply),
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}]}

    def _hang(self) -> None:
        """Headers were sent; now only SSE keep-alive comments, until the client goes away."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.server.closing.is_set():
            self.wfile.write(b": keep-alive\n\n")
            self.wfile.flush()
            self.server.closing.wait(0.05)

    def _stream(self, body: dict, reply: dict, fault: str | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()  # HTTP/1.0: the body ends when the connection closes
        if fault == "hang":
            try:
                self._hang()
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        if fault == "empty":
            self.wfile.write(b"data: [DONE]\n\n")
            return

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {**self._base(body, "chat.completion.chunk"),
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

        chunks = []
        if "tool_call" in reply:
            call = reply["tool_call"]
            chunks.append(chunk({"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": call["id"], "type": "function",
                 "function": {"name": call["name"], "arguments": ""}}]}))
            args = call["arguments"]
            function = {"name": call["name"]} if "repeat_tool_name" in self.server.quirks else {}
            for start in range(0, len(args), 7):  # the arguments in several fragments
                chunks.append(chunk({"tool_calls": [{"index": 0, "function": {
                    **function, "arguments": args[start:start + 7]}}]}))
            chunks.append(chunk({}, "tool_calls"))
        else:
            chunks.append(chunk({"role": "assistant", "content": ""}))
            words = tokens(reply["text"])
            if fault in ("no_finish", "length", "stall"):
                words = words[: max(1, len(words) // 2)]
            chunks += [chunk({"content": token}) for token in words]
            if fault == "no_finish":  # the server interrupted the request: no finish reason, no [DONE]
                return self._send_chunks(chunks, done=False)
            if fault == "stall":  # part of the answer, then silence
                self._send_chunks(chunks, done=False)
                try:
                    self._hang()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
            chunks.append(chunk({}, "length" if fault == "length" else "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**self._base(body, "chat.completion.chunk"), "choices": [],
                           "usage": _usage(body, reply)})
        self._send_chunks(chunks)

    def _send_chunks(self, chunks: list[dict], done: bool = True) -> None:
        try:
            for item in chunks:
                self.wfile.write(f"data: {json.dumps(item)}\n\n".encode())
                self.wfile.flush()
                time.sleep(self.server.token_delay)
            if done:
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[dict]
    probes: list[dict]
    lock: threading.Lock
    token_delay: float
    quirks: frozenset[str]
    faults: collections.deque
    models: tuple[str, ...]
    context_tokens: int | None
    lists_context: bool
    closing: threading.Event


class FakeOpenAIServer:
    """Context manager: serves on 127.0.0.1:<free port> in a daemon thread; ``requests`` records bodies."""

    def __init__(self, token_delay: float = 0.005, quirks: frozenset[str] | set[str] = frozenset(),
                 models: tuple[str, ...] = ("fake-model",), context_tokens: int | None = None,
                 lists_context: bool = True):
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.requests, self._httpd.lock, self._httpd.token_delay = [], threading.Lock(), token_delay
        self._httpd.probes, self._httpd.quirks, self._httpd.faults = [], frozenset(quirks), collections.deque()
        self._httpd.models, self._httpd.context_tokens = tuple(models), context_tokens
        self._httpd.lists_context = lists_context
        self._httpd.closing = threading.Event()
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-openai", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def requests(self) -> list[dict]:
        with self._httpd.lock:
            return list(self._httpd.requests)

    @property
    def probes(self) -> list[dict]:
        with self._httpd.lock:
            return list(self._httpd.probes)

    def fail_next(self, *faults: str) -> None:
        """The next chat requests, one each, meet these faults (see the module docstring)."""
        with self._httpd.lock:
            self._httpd.faults.extend(faults)

    def start(self) -> "FakeOpenAIServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
