"""The naive baseline: the app most tutorials produce, kept here ONLY as a benchmark comparison.

One Gradio ``ChatInterface`` with default settings (so the chat event has ``concurrency_limit=1`` and
``max_threads=40``), one process-wide agent and ONE shared conversation (a single ``thread_id``) for
every visitor, and a yield per streamed token. It runs the same offline model and the same LangChain
agent graph as the real app, so the comparison is about how the app serves users, not about the model.

    python bench/naive_app.py --host 127.0.0.1 --port 7870   # CMW_OFFLINE_TOKEN_DELAY=0.02 by default

Never deploy this: every user shares one memory (ask "What's my name?" after two users told theirs).

``CMW_BENCH_BARE=1`` makes it the *bare* baseline instead (issue 15's reference for the app's CPU per turn):
a ``ChatInterface`` with concurrency on (``concurrency_limit=None``) whose function is Gradio and the
tokens and nothing else: the offline model's answer for the tab's own history (``decide``, a pure
function of the transcript, so no memory is shared), split into the same tokens and streamed at the same
delay, one yield per token; no agent graph, no LangChain streaming, no store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import gradio as gr  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402

from agent.offline_model import OfflineChatModel, decide, tokens  # noqa: E402

TOKEN_DELAY = float(os.environ.get("CMW_OFFLINE_TOKEN_DELAY", "0.02"))
BARE = os.environ.get("CMW_BENCH_BARE", "") == "1"


def _naive_chat():
    from langgraph.checkpoint.memory import InMemorySaver

    from agent.catalog import load_catalog
    from agent.cmw_agent import build_agent_graph

    # The naive part: one agent and one conversation for the whole process.
    graph = build_agent_graph(OfflineChatModel(token_delay=TOKEN_DELAY), load_catalog(), InMemorySaver())
    shared = {"configurable": {"thread_id": "everyone"}}

    async def chat(message, history):
        text = ""
        async for chunk, meta in graph.astream({"messages": [HumanMessage(content=message)]}, shared,
                                               stream_mode="messages"):
            if meta.get("langgraph_node") == "model" and chunk.text:
                text += chunk.text
                yield text  # one yield per token: the default way

    return chat


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


async def bare_chat(message, history):
    """The offline model's answer to this tab's history, its tokens streamed at the model's delay."""
    transcript = [(HumanMessage if m["role"] == "user" else AIMessage)(content=_text(m["content"])) for m in history]
    text = ""
    for token in tokens(decide([*transcript, HumanMessage(content=message)]).text):
        await asyncio.sleep(TOKEN_DELAY)
        text += token
        yield text  # one yield per token


if BARE:
    demo = gr.ChatInterface(bare_chat, title="Bare chat (benchmark baseline)", concurrency_limit=None, api_name="chat")
else:
    demo = gr.ChatInterface(_naive_chat(), title="Naive chat (benchmark baseline)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7870)
    args = parser.parse_args()
    demo.launch(server_name=args.host, server_port=args.port)
