"""A minimal app served with Gradio's own MCP server (``launch(mcp_server=True)``), as people write them.

Run as a subprocess by tests/test_mcp_gradio_builtin.py: ``python gradio_builtin_mcp_app.py PORT``. Its
tools report the Gradio ``session_hash`` they ran under, and a "remember/recall" pair keeps notes in a
dict keyed by that hash - the usual way such apps keep per-user state.
"""

from __future__ import annotations

import sys
import time

import gradio as gr


def build() -> gr.Blocks:
    notes: dict[str, str] = {}  # per session_hash, as such apps do; this is what the test shows shared

    def whoami(text: str, request: gr.Request) -> str:
        """Report the Gradio session this call runs in.

        Args:
            text: anything
        """
        return f"{request.session_hash}"

    def remember(note: str, request: gr.Request) -> str:
        """Remember a note for this caller.

        Args:
            note: the note
        """
        notes[request.session_hash] = note
        return "ok"

    def recall(text: str, request: gr.Request) -> str:
        """Recall this caller's note.

        Args:
            text: anything
        """
        return notes.get(request.session_hash, "")

    def whoami_direct(text: str, request: gr.Request) -> str:
        """Report the Gradio session of an unqueued call.

        Args:
            text: anything
        """
        return f"{request.session_hash}"

    with gr.Blocks() as demo:
        box, out = gr.Textbox(), gr.Textbox()
        gr.Button().click(whoami, [box], [out], api_name="whoami")
        gr.Button().click(remember, [box], [out], api_name="remember")
        gr.Button().click(recall, [box], [out], api_name="recall")
        gr.Button().click(whoami_direct, [box], [out], api_name="whoami_direct", queue=False)
    return demo


if __name__ == "__main__":
    app = build()
    app.launch(mcp_server=True, server_port=int(sys.argv[1]), prevent_thread_lock=True, quiet=True)
    print("MCP", app.mcp_server, getattr(app, "mcp_error", None), flush=True)
    while True:
        time.sleep(3600)
