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
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        with self.server.lock:
            self.server.requests.append(body)
        reply = script(body)
        if body.get("stream"):
            self._stream(body, reply)
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

    def _stream(self, body: dict, reply: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()  # HTTP/1.0: the body ends when the connection closes

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
            for start in range(0, len(args), 7):  # the arguments in several fragments
                chunks.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[start:start + 7]}}]}))
            chunks.append(chunk({}, "tool_calls"))
        else:
            chunks.append(chunk({"role": "assistant", "content": ""}))
            chunks += [chunk({"content": token}) for token in tokens(reply["text"])]
            chunks.append(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**self._base(body, "chat.completion.chunk"), "choices": [],
                           "usage": _usage(body, reply)})
        try:
            for item in chunks:
                self.wfile.write(f"data: {json.dumps(item)}\n\n".encode())
                self.wfile.flush()
                time.sleep(self.server.token_delay)
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[dict]
    lock: threading.Lock
    token_delay: float


class FakeOpenAIServer:
    """Context manager: serves on 127.0.0.1:<free port> in a daemon thread; ``requests`` records bodies."""

    def __init__(self, token_delay: float = 0.005):
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.requests, self._httpd.lock, self._httpd.token_delay = [], threading.Lock(), token_delay
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-openai", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def requests(self) -> list[dict]:
        with self._httpd.lock:
            return list(self._httpd.requests)

    def start(self) -> "FakeOpenAIServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
