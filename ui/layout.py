"""The page: a chat, a model banner, and the event wiring. Holds no state of its own."""

from __future__ import annotations

import gradio as gr

from settings import Settings
from ui.chat_handler import ChatHandlers

INTRO = """### CMW Agent
Every browser tab is its own private session: your conversation and cart are never shown to anyone else.

**Model:** {label}. {how_to_switch}

Try: *My name is Alice* · *What's my name?* · *Add 2 apples to my cart* · *Show my cart* · *Show my session* · *Count to 40*
"""


def build_ui(handlers: ChatHandlers, settings: Settings, model_label: str, how_to_switch: str) -> gr.Blocks:
    limit = settings.gradio_event_limit  # running turns + waiting ones (see security/admission.py)
    with gr.Blocks(title="CMW Agent") as demo:
        gr.Markdown(INTRO.format(label=model_label, how_to_switch=how_to_switch), elem_id="model-banner")
        chatbot = gr.Chatbot(label="Conversation", height=520, elem_id="chatbot", buttons=["copy"],
                             placeholder="Say hello, or try one of the phrases above.")
        textbox = gr.Textbox(placeholder="Type a message and press Enter", show_label=False, lines=1,
                             max_lines=8, submit_btn=True, stop_btn=False, elem_id="message", autofocus=True)
        pending = gr.State(None)  # the submitted text between the two steps of one submit; transient

        def start(message):
            return gr.Textbox(value="", interactive=False, submit_btn=False, stop_btn=True), message

        def finish():
            return gr.Textbox(interactive=True, submit_btn=True, stop_btn=False)

        submitted = textbox.submit(start, [textbox], [textbox, pending], queue=False, api_visibility="private")
        streaming = submitted.then(handlers.respond, [pending], [chatbot], concurrency_limit=limit,
                                   api_visibility="private", show_progress="hidden")
        streaming.then(finish, None, [textbox], queue=False, api_visibility="private")

        retrying = chatbot.retry(lambda: gr.Textbox(interactive=False, submit_btn=False, stop_btn=True),
                                 None, [textbox], queue=False, api_visibility="private").then(
            handlers.retry, None, [chatbot], concurrency_limit=limit, api_visibility="private",
            show_progress="hidden")
        retrying.then(finish, None, [textbox], queue=False, api_visibility="private")

        textbox.stop(None, None, None, cancels=[streaming, retrying], api_visibility="private")
        chatbot.undo(handlers.undo, None, [chatbot, textbox], api_visibility="private")
        chatbot.clear(handlers.clear, None, [chatbot], api_visibility="private")
        demo.load(handlers.load, None, [chatbot], api_visibility="private")

        # Public API contract: /chat takes the message text and streams the reply text.
        with gr.Row(visible=False):
            api_message = gr.Textbox(label="message")
            api_reply = gr.Textbox(label="reply")
            api_button = gr.Button("chat")
        api_button.click(handlers.api_chat, [api_message], [api_reply], api_name="chat",
                         concurrency_limit=limit, api_description="Send one message; streams the reply text.")
    return demo
