"""The page: a collapsible sidebar (conversations, your data), the chat, and the event wiring. No state.

Desktop: the sidebar is open beside the chat. Phone (<= 768 px): the sidebar is closed and opens from its
button; a one-line header, the chat and the message box fill the first screen. Background refreshes
(conversation list, page load) show no loading overlay.
"""

from __future__ import annotations

from html import escape
from types import MappingProxyType

import gradio as gr

from settings import Settings
from ui import sidebar
from ui.chat_handler import LATEST_CONVERSATION, ChatHandlers, ready_box
from ui.conversations import ConversationHandlers
from ui.assistant import AssistantHandlers, build_assistant_panel
from ui.privacy import PrivacyHandlers
from ui.uploads import UploadHandlers
from agent.file_reader import ACCEPTED_SUFFIXES

EXAMPLES = ("My name is Alice", "What's my name?", "Add 2 apples to my cart", "Show my cart", "Show my session",
            "Count to 40")
WELCOME = """### How can I help?
Every browser tab is its own private session: your conversations and cart are never shown to anyone else.

**Model:** {label}. {how_to_switch}"""

# A tab remembers which conversation it shows in sessionStorage: per tab, and it survives a reload. In a
# cross-site frame the browser denies storage (SecurityError): every access is guarded, and such a tab
# asks for this owner's most recent conversation instead (LATEST_CONVERSATION, see ChatHandlers.load).
READ_TAB_CONVERSATION = ("(ref) => { try { return sessionStorage.getItem('cmw-conversation') || ''; } "
                         "catch (e) { return '" + LATEST_CONVERSATION + "'; } }")
WRITE_TAB_CONVERSATION = ("(ref) => { try { if (ref) { sessionStorage.setItem('cmw-conversation', ref); } } "
                          "catch (e) {} return ref; }")
HIDDEN = MappingProxyType({"api_visibility": "private"})
QUIET = MappingProxyType({"api_visibility": "private", "show_progress": "hidden"})

# Page CSS (given to launch(), see app_ng.App.launch). The chat fills the viewport's height, minus the
# header and the message box, on every screen size; dvh follows a phone's collapsing address bar.
PAGE_CSS = """
#topbar { align-items: center; gap: 8px; flex-wrap: nowrap; min-height: 0; }
#model-banner { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
#model-banner .cmw-brand { font-weight: 700; font-size: 17px; vertical-align: middle; }
#model-banner .cmw-model { display: inline-block; vertical-align: middle; font-size: 12px; padding: 1px 8px;
  margin-left: 6px; border-radius: 999px; background: var(--background-fill-secondary);
  color: var(--body-text-color-subdued); max-width: calc(100% - 120px); overflow: hidden; text-overflow: ellipsis; }
#chatbot { height: calc(100dvh - 200px) !important; min-height: 240px; }
#chatbot .placeholder { text-align: center; max-width: 640px; margin: 0 auto; padding: 0 16px; }
#chatbot .examples { display: flex; flex-wrap: wrap; justify-content: center; gap: 8px; }
#chatbot .example { width: auto; min-height: 0; padding: 6px 14px; border-radius: 999px; flex: none; }
#composer { gap: 6px; align-items: flex-end; flex-wrap: nowrap; }
#attach { min-width: 44px !important; max-width: 52px; font-size: 0; padding: 0; align-self: stretch; }
#attach::before { content: ""; width: 20px; height: 20px; background: currentColor;
  -webkit-mask: url("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24'%3E%3Cpath d='M21 11.5l-8.6 8.6a5.5 5.5 0 0 1-7.8-7.8l8.6-8.6a3.7 3.7 0 0 1 5.2 5.2l-8.6 8.6a1.8 1.8 0 0 1-2.6-2.6l7.9-7.9' fill='none' stroke='black' stroke-width='2' stroke-linecap='round' stroke-linejoin='round'/%3E%3C/svg%3E") center / contain no-repeat; mask: url("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24'%3E%3Cpath d='M21 11.5l-8.6 8.6a5.5 5.5 0 0 1-7.8-7.8l8.6-8.6a3.7 3.7 0 0 1 5.2 5.2l-8.6 8.6a1.8 1.8 0 0 1-2.6-2.6l7.9-7.9' fill='none' stroke='black' stroke-width='2' stroke-linecap='round' stroke-linejoin='round'/%3E%3C/svg%3E") center / contain no-repeat; }
#notice { padding: 6px 12px; border-radius: 8px; background: #fef3c7; color: #78350f; font-size: 14px; }
#notice p { margin: 0; }
#cookie-notice { font-size: 13px; }
#new-chat { justify-content: flex-start; gap: 8px; }
#new-chat::before { content: ""; width: 16px; height: 16px; flex: none; background: currentColor;
  -webkit-mask: url("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24'%3E%3Cpath d='M12 5v14M5 12h14' fill='none' stroke='black' stroke-width='2.2' stroke-linecap='round'/%3E%3C/svg%3E") center / contain no-repeat;
  mask: url("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24'%3E%3Cpath d='M12 5v14M5 12h14' fill='none' stroke='black' stroke-width='2.2' stroke-linecap='round'/%3E%3C/svg%3E") center / contain no-repeat; }
@media (max-width: 768px) {
  #topbar { padding-left: 34px; }
  #model-banner .cmw-brand { font-size: 16px; }
  #chatbot { height: calc(100dvh - 142px) !important; min-height: 200px; }
}
"""
# Gradio scopes PAGE_CSS to the app's content; the page's own padding and footer are outside it.
PAGE_HEAD = """<style>
body:has(#notice) #chatbot, body:has(#cookie-notice) #chatbot { height: calc(100dvh - 260px) !important; }
@media (max-width: 768px) {
  body:has(#notice) #chatbot, body:has(#cookie-notice) #chatbot { height: calc(100dvh - 200px) !important; }
  .gradio-container .main.app { padding: 6px 8px 0 !important; }
  .gradio-container footer { display: none !important; }
}
</style>"""


def build_ui(chat: ChatHandlers, conversations: ConversationHandlers, privacy: PrivacyHandlers,
             uploads: UploadHandlers, settings: Settings, model_label: str, how_to_switch: str,
             assistant: AssistantHandlers | None = None) -> gr.Blocks:
    limit = settings.gradio_event_limit  # running turns + waiting ones (see security/admission.py)
    with gr.Blocks(title="CMW Agent", delete_cache=(600, 600)) as demo:
        conversation_ref = gr.Textbox(visible=False, elem_id="conversation-ref")
        with gr.Sidebar(open=True, width=300, elem_id="sidebar"):
            new_chat = gr.Button("New chat", elem_id="new-chat", variant="secondary", size="md")
            conversation_list = gr.HTML([], html_template=sidebar.TEMPLATE, css_template=sidebar.CSS,
                                        js_on_load=sidebar.JS, elem_id="conversations")
            if assistant is not None:
                build_assistant_panel(assistant, conversation_ref)
            with gr.Accordion("Your data", open=False, elem_id="data-panel") as data_panel:
                keeps = gr.Markdown(elem_id="keeps")
                show_keeps = gr.Button("Refresh", size="sm")
                export = gr.Button("Export my data (JSON + Markdown)", size="sm", elem_id="export")
                delete_all = gr.Button("Delete all my data", size="sm", variant="stop", elem_id="delete-all")
                with gr.Column(visible=False) as confirm_row:
                    gr.Markdown("**Delete every conversation, message and cart you have here? This cannot be "
                                "undone.**")
                    confirm = gr.Button("Yes, delete everything", variant="stop", size="sm",
                                        elem_id="confirm-delete-all")
                    cancel = gr.Button("Cancel", size="sm")
                export_files = gr.File(label="Your export", file_count="multiple", interactive=False)
        with gr.Row(elem_id="topbar"):
            gr.HTML(f'<span class="cmw-brand">CMW Agent</span> <span class="cmw-model" title="{escape(how_to_switch)}">'
                    f'{escape(model_label)}</span>', js_on_load=None, elem_id="model-banner")
        cookie_notice = gr.Markdown(visible=False, elem_id="cookie-notice")
        chatbot = gr.Chatbot(show_label=False, elem_id="chatbot", buttons=["copy"],
                             placeholder=WELCOME.format(label=model_label, how_to_switch=how_to_switch),
                             examples=[{"text": text} for text in EXAMPLES])
        notice = gr.Markdown(visible=False, elem_id="notice")
        with gr.Row(elem_id="composer", equal_height=True):
            attach = gr.UploadButton("Attach", file_types=list(ACCEPTED_SUFFIXES), file_count="multiple", size="md",
                                     scale=0, min_width=48, elem_id="attach", variant="secondary")
            textbox = gr.Textbox(placeholder="Message CMW Agent", show_label=False, lines=1, max_lines=8,
                                 submit_btn=True, stop_btn=False, elem_id="message", autofocus=True, scale=1)
        export_folder = gr.State(None)  # this request's export folder until Gradio has copied the files

        demo.load(None, None, None, js=sidebar.CLOSED_ON_PHONE, **HIDDEN)
        conversation_ref.change(None, [conversation_ref], None, js=WRITE_TAB_CONVERSATION, **HIDDEN)
        demo.load(chat.load, [conversation_ref], [chatbot, conversation_ref, cookie_notice], js=READ_TAB_CONVERSATION,
                  **QUIET).then(conversations.refresh, None, [conversation_list], **QUIET)

        # One event per submit: the text goes from the box straight to the handler (no gr.State holds it),
        # which checks it first and answers with the chat, the box and the notice (see ui/chat_handler.py).
        turn_outputs = [chatbot, conversation_ref, textbox, notice]
        # Each ends by resetting Gradio's copy of the box (ready_box: no value, so the screen keeps its text).
        for turn in (textbox.submit(chat.respond, [textbox, conversation_ref], turn_outputs, concurrency_limit=limit,
                                    **QUIET),
                     chatbot.example_select(chat.example, [conversation_ref], turn_outputs,
                                            concurrency_limit=limit, **QUIET),
                     chatbot.retry(chat.retry, [conversation_ref], turn_outputs, concurrency_limit=limit, **QUIET)):
            turn.then(ready_box, None, [textbox], queue=False, **HIDDEN).then(
                conversations.refresh, None, [conversation_list], **QUIET)

        # The paperclip: each file is read, stored as this owner's, and shown as a file bubble (ui/uploads.py).
        attach.upload(uploads.attach, [attach, conversation_ref], turn_outputs, concurrency_limit=limit,
                      **QUIET).then(conversations.refresh, None, [conversation_list], **QUIET)
        textbox.stop(chat.stop, None, None, queue=False, **HIDDEN)
        chatbot.undo(chat.undo, [conversation_ref], [chatbot, textbox, notice], **HIDDEN).then(
            ready_box, None, [textbox], queue=False, **HIDDEN)  # the text stays on screen, not in Gradio's state
        for trigger in (chatbot.clear, new_chat.click):
            trigger(chat.clear, None, [chatbot, conversation_ref], **HIDDEN).then(
                conversations.refresh, None, [conversation_list], **QUIET)
        # always_last: a click while the previous one is still answered is run next, not dropped.
        conversation_list.click(conversations.act, None, [chatbot, conversation_ref, conversation_list],
                                trigger_mode="always_last", **QUIET)

        for trigger in (data_panel.expand, show_keeps.click):
            trigger(privacy.keeps, None, [keeps], **HIDDEN)
        export.click(privacy.export, None, [export_files, export_folder], **HIDDEN).then(
            privacy.forget_export, [export_folder], None, **HIDDEN)
        delete_all.click(lambda: gr.Column(visible=True), None, [confirm_row], queue=False, **HIDDEN)
        cancel.click(lambda: gr.Column(visible=False), None, [confirm_row], queue=False, **HIDDEN)
        confirm.click(privacy.delete_all, None, [chatbot, conversation_ref], api_name="delete_all_from_page",
                      **HIDDEN).then(
            lambda: gr.Column(visible=False), None, [confirm_row], queue=False, **HIDDEN).then(
            conversations.refresh, None, [conversation_list], **QUIET).then(privacy.keeps, None, [keeps], **HIDDEN)
        demo.unload(chat.unload)

        # Public API (stable contract): /chat, /upload, /conversations, /resume, /delete_all.
        with gr.Row(visible=False):
            api_message = gr.Textbox(label="message")
            api_reply = gr.Textbox(label="reply")
            api_conversation = gr.Textbox(label="conversation_id")
            api_list = gr.JSON(label="conversations")
            api_messages = gr.JSON(label="messages")
            api_deleted = gr.Textbox(label="result")
            api_file = gr.File(label="file", type="filepath", file_types=list(ACCEPTED_SUFFIXES))
            api_summary = gr.Textbox(label="summary")
            api_upload = gr.Button()
            api_chat, api_conversations, api_resume, api_delete_all = gr.Button(), gr.Button(), gr.Button(), gr.Button()
        # preprocess=False: the handler cleans whatever was sent (ui/input_guard.py), and Gradio's Textbox
        # preprocess (str()) would cost a worker-thread hop per message.
        api_chat.click(chat.api_chat, [api_message], [api_reply], api_name="chat", concurrency_limit=limit,
                       preprocess=False,
                       api_description="Send one message; streams the reply text. Keep the cmw_owner cookie the "
                                       "server sets on your first request and send it back on every later one "
                                       "(gradio_client does this for you; with curl use a cookie jar: -c jar -b jar): "
                                       "without it each request is a stranger and is refused.")
        api_upload.click(uploads.api_upload, [api_file], [api_summary], api_name="upload", concurrency_limit=limit,
                         api_description="Attach one file (CSV, TSV, TXT, Markdown, JSON or PDF; use "
                                         "gradio_client.handle_file) to this session's conversation; returns its "
                                         "one-line summary, or why it was not stored. Same cookie rules as /chat.")
        api_conversations.click(conversations.api_conversations, None, [api_list], api_name="conversations",
                                api_description="This owner's conversations, newest first.")
        api_resume.click(conversations.api_resume, [api_conversation], [api_messages], api_name="resume",
                         api_description="Continue one of your conversations in this session; returns its messages.")
        api_delete_all.click(privacy.api_delete_all, None, [api_deleted], api_name="delete_all",
                             api_description="Delete all of your conversations, messages and carts; running "
                                             "turns are stopped. Returns what was deleted.")
    return demo
