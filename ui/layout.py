"""The page: conversations panel, chat, "your data" panel, and the event wiring. Holds no state."""

from __future__ import annotations

from types import MappingProxyType

import gradio as gr

from settings import Settings
from ui.chat_handler import LATEST_CONVERSATION, ChatHandlers, ready_box
from ui.conversations import ConversationHandlers
from ui.privacy import PrivacyHandlers

INTRO = """### CMW Agent
Every browser tab is its own private session: your conversations and cart are never shown to anyone else.

**Model:** {label}. {how_to_switch}

Try: *My name is Alice* · *What's my name?* · *Add 2 apples to my cart* · *Show my cart* · *Show my session* · *Count to 40*
"""

# A tab remembers which conversation it shows in sessionStorage: per tab, and it survives a reload. In a
# cross-site frame the browser denies storage (SecurityError): every access is guarded, and such a tab
# asks for this owner's most recent conversation instead (LATEST_CONVERSATION, see ChatHandlers.load).
READ_TAB_CONVERSATION = ("(ref) => { try { return sessionStorage.getItem('cmw-conversation') || ''; } "
                         "catch (e) { return '" + LATEST_CONVERSATION + "'; } }")
WRITE_TAB_CONVERSATION = ("(ref) => { try { if (ref) { sessionStorage.setItem('cmw-conversation', ref); } } "
                          "catch (e) {} return ref; }")
HIDDEN = MappingProxyType({"api_visibility": "private"})


def build_ui(chat: ChatHandlers, conversations: ConversationHandlers, privacy: PrivacyHandlers,
             settings: Settings, model_label: str, how_to_switch: str) -> gr.Blocks:
    limit = settings.gradio_event_limit  # running turns + waiting ones (see security/admission.py)
    with gr.Blocks(title="CMW Agent", delete_cache=(600, 600)) as demo:
        gr.Markdown(INTRO.format(label=model_label, how_to_switch=how_to_switch), elem_id="model-banner")
        cookie_notice = gr.Markdown(visible=False, elem_id="cookie-notice")
        conversation_ref = gr.Textbox(visible=False, elem_id="conversation-ref")
        with gr.Row():
            with gr.Column(scale=1, min_width=240):
                new_chat = gr.Button("➕ New chat", elem_id="new-chat")
                conversation_list = gr.Radio(label="Your conversations", choices=[], elem_id="conversations")
                rename_to = gr.Textbox(placeholder="New name for the selected conversation", show_label=False,
                                       elem_id="rename-to")
                with gr.Row():
                    rename = gr.Button("Rename", size="sm", elem_id="rename")
                    delete = gr.Button("Delete", size="sm", variant="stop", elem_id="delete-conversation")
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Conversation", height=520, elem_id="chatbot", buttons=["copy"],
                                     placeholder="Say hello, or try one of the phrases above.")
                notice = gr.Markdown(visible=False, elem_id="notice")
                textbox = gr.Textbox(placeholder="Type a message and press Enter", show_label=False, lines=1,
                                     max_lines=8, submit_btn=True, stop_btn=False, elem_id="message", autofocus=True)
        with gr.Accordion("Your data: what this assistant keeps, export, delete", open=False) as data_panel:
            keeps = gr.Markdown(elem_id="keeps")
            with gr.Row():
                show_keeps = gr.Button("Refresh", size="sm")
                export = gr.Button("Export my data (JSON + Markdown)", size="sm", elem_id="export")
                delete_all = gr.Button("Delete all my data", size="sm", variant="stop", elem_id="delete-all")
            with gr.Row(visible=False) as confirm_row:
                gr.Markdown("**Delete every conversation, message and cart you have here? This cannot be undone.**")
                confirm = gr.Button("Yes, delete everything", variant="stop", elem_id="confirm-delete-all")
                cancel = gr.Button("Cancel")
            export_files = gr.File(label="Your export", file_count="multiple", interactive=False)
        export_folder = gr.State(None)  # this request's export folder until Gradio has copied the files

        conversation_ref.change(None, [conversation_ref], None, js=WRITE_TAB_CONVERSATION, **HIDDEN)
        demo.load(chat.load, [conversation_ref], [chatbot, conversation_ref, cookie_notice], js=READ_TAB_CONVERSATION,
                  **HIDDEN).then(conversations.refresh, None, [conversation_list], **HIDDEN)

        # One event per submit: the text goes from the box straight to the handler (no gr.State holds it),
        # which checks it first and answers with the chat, the box and the notice (see ui/chat_handler.py).
        turn_outputs = [chatbot, conversation_ref, textbox, notice]
        textbox.submit(chat.respond, [textbox, conversation_ref], turn_outputs, concurrency_limit=limit,
                       show_progress="hidden", **HIDDEN).then(
            conversations.refresh, None, [conversation_list], show_progress="hidden", **HIDDEN)
        chatbot.retry(chat.retry, [conversation_ref], turn_outputs, concurrency_limit=limit,
                      show_progress="hidden", **HIDDEN)

        textbox.stop(chat.stop, None, None, queue=False, **HIDDEN)
        chatbot.undo(chat.undo, [conversation_ref], [chatbot, textbox, notice], **HIDDEN).then(
            ready_box, None, [textbox], queue=False, **HIDDEN)  # the text stays on screen, not in Gradio's state
        for trigger in (chatbot.clear, new_chat.click):
            trigger(chat.clear, None, [chatbot, conversation_ref], **HIDDEN).then(
                conversations.refresh, None, [conversation_list], **HIDDEN)

        conversation_list.input(conversations.switch, [conversation_list], [chatbot, conversation_ref], **HIDDEN)
        rename.click(conversations.rename, [conversation_list, rename_to], [conversation_list, rename_to], **HIDDEN)
        delete.click(conversations.delete, [conversation_list], [chatbot, conversation_ref, conversation_list],
                     **HIDDEN)

        for trigger in (data_panel.expand, show_keeps.click):
            trigger(privacy.keeps, None, [keeps], **HIDDEN)
        export.click(privacy.export, None, [export_files, export_folder], **HIDDEN).then(
            privacy.forget_export, [export_folder], None, **HIDDEN)
        delete_all.click(lambda: gr.Row(visible=True), None, [confirm_row], queue=False, **HIDDEN)
        cancel.click(lambda: gr.Row(visible=False), None, [confirm_row], queue=False, **HIDDEN)
        confirm.click(privacy.delete_all, None, [chatbot, conversation_ref], **HIDDEN).then(
            lambda: gr.Row(visible=False), None, [confirm_row], queue=False, **HIDDEN).then(
            conversations.refresh, None, [conversation_list], **HIDDEN).then(privacy.keeps, None, [keeps], **HIDDEN)
        demo.unload(chat.unload)

        # Public API (stable contract): /chat, /conversations, /resume, /delete_all.
        with gr.Row(visible=False):
            api_message = gr.Textbox(label="message")
            api_reply = gr.Textbox(label="reply")
            api_conversation = gr.Textbox(label="conversation_id")
            api_list = gr.JSON(label="conversations")
            api_messages = gr.JSON(label="messages")
            api_deleted = gr.Textbox(label="result")
            api_chat, api_conversations, api_resume, api_delete_all = gr.Button(), gr.Button(), gr.Button(), gr.Button()
        api_chat.click(chat.api_chat, [api_message], [api_reply], api_name="chat", concurrency_limit=limit,
                       api_description="Send one message; streams the reply text.")
        api_conversations.click(conversations.api_conversations, None, [api_list], api_name="conversations",
                                api_description="This owner's conversations, newest first.")
        api_resume.click(conversations.api_resume, [api_conversation], [api_messages], api_name="resume",
                         api_description="Continue one of your conversations in this session; returns its messages.")
        api_delete_all.click(privacy.api_delete_all, None, [api_deleted], api_name="delete_all",
                             api_description="Delete all of your conversations, messages and carts; running "
                                             "turns are stopped. Returns what was deleted.")
    return demo
