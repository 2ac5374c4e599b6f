"""What a person does on the page is never lost or misapplied, and failures say what to do (issue #12).

Refusals (empty, too long, too fast) are a notice above the message box, never a chat message: Undo and
Retry still act on the last real turn, the refused text stays in the box. What a person typed is shown
literally (no HTML or Markdown of theirs is rendered); the assistant's Markdown still renders. A stopped
answer says so, on screen and after a reload. A failed turn is one sentence in the chat and the box
returns to Send. Run alone with ``pytest tests/e2e/test_ui.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import sys
import uuid
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

try:
    from playwright.sync_api import expect
except ImportError:  # the ``browser`` fixture reports it: a skip locally, a failure in CI
    expect = None

from ui.failures import MODEL_UNREACHABLE, STORE_DOWN
from ui.input_guard import EMPTY_MESSAGE, too_long_message


def _e2e_conftest():
    path = Path(__file__).resolve().with_name("conftest.py")
    for module in list(sys.modules.values()):
        if Path(getattr(module, "__file__", None) or "").resolve() == path:
            return module
    raise ImportError(f"{path} is not loaded: run this module through pytest")


_E2E = _e2e_conftest()
NOTICE, USER_MSG, BOT_MSG = _E2E.NOTICE, _E2E.USER_MSG, _E2E.BOT_MSG

pytestmark = pytest.mark.browser
STOPPED = "(answer stopped here)"


def user_memory(chat) -> list[str]:
    return [m.text for m in chat.memory().messages if isinstance(m, HumanMessage)]


def refuse(chat, text: str, expected: str) -> None:
    """Send ``text`` and wait until the page shows the refusal ``expected`` in the notice."""
    chat.textarea.fill(text)
    chat.textarea.press("Enter")
    expect(chat.notice).to_be_visible()
    expect(chat.notice).to_contain_text(expected)
    chat.wait_idle()


def carol_and_apples(chat) -> str:
    chat.ask("My name is Carol")
    answer = chat.ask("Add 2 apples to my cart")
    assert answer.startswith("Added 2 × Apples")
    return answer


# Refusals ------------------------------------------------------------------------------------------
def test_undo_after_a_refusal_undoes_the_last_turn(launch_app, open_chat):
    app, url = launch_app()
    chat = open_chat(app, url)
    answer = carol_and_apples(chat)

    refuse(chat, "", EMPTY_MESSAGE)
    # The refusal is not in the chat, let alone inside the earlier answer.
    assert EMPTY_MESSAGE not in chat.chat_text()
    assert chat.last_bot_text() == answer and chat.user_texts() == ["My name is Carol", "Add 2 apples to my cart"]

    chat.click_undo()
    expect(chat.user_messages).to_have_count(1)
    expect(chat.textarea).to_have_value("Add 2 apples to my cart")
    expect(chat.notice).to_be_hidden()
    assert user_memory(chat) == ["My name is Carol"]
    chat.assert_no_error()


def test_retry_after_a_refusal_answers_the_last_turn_again(launch_app, open_chat):
    app, url = launch_app()
    chat = open_chat(app, url)
    answer = carol_and_apples(chat)

    refuse(chat, "   ", EMPTY_MESSAGE)
    chat.click_retry()
    assert chat.user_texts() == ["My name is Carol", "Add 2 apples to my cart"]
    assert chat.last_bot_text() == answer and chat.tool_bubbles.count() == 1
    assert user_memory(chat) == ["My name is Carol", "Add 2 apples to my cart"]
    expect(chat.notice).to_be_hidden()
    assert "2 × Apples" in chat.ask("Show my cart")
    chat.assert_no_error()


def test_a_too_long_message_stays_in_the_box(launch_app, open_chat):
    app, url = launch_app(max_message_chars=50)
    chat = open_chat(app, url)
    chat.ask("My name is Carol")
    long_text = "Please remember all of this: " + "word " * 10 + "and the end."

    refuse(chat, long_text, too_long_message(50))
    expect(chat.textarea).to_have_value(long_text)  # not wiped: the person can shorten it
    expect(chat.textarea).to_be_editable()
    expect(chat.stop_button).to_have_count(0)
    assert chat.user_texts() == ["My name is Carol"] and user_memory(chat) == ["My name is Carol"]
    assert too_long_message(50) not in chat.chat_text()

    chat.textarea.fill("")
    assert chat.ask("What's my name?") == "Your name is Carol."
    expect(chat.notice).to_be_hidden()  # the next message sent clears the notice
    chat.assert_no_error()


def test_too_fast_is_a_notice_not_part_of_the_previous_answer(launch_app, open_chat):
    app, url = launch_app(rate_limit_per_owner=2)
    chat = open_chat(app, url)
    answer = carol_and_apples(chat)

    refuse(chat, "What's my name?", "You are sending messages too quickly")
    assert chat.last_bot_text() == answer and "too quickly" not in chat.chat_text()
    expect(chat.textarea).to_have_value("What's my name?")
    assert user_memory(chat) == ["My name is Carol", "Add 2 apples to my cart"]
    chat.assert_no_error()


# Literal user text ---------------------------------------------------------------------------------
def test_user_text_is_shown_literally_and_answers_still_render_markdown(launch_app, open_chat):
    app, url = launch_app()
    chat = open_chat(app, url)
    requested = []
    chat.page.on("request", lambda request: requested.append(request.url))
    texts = ["<img src=x onerror=alert(1)>",
             "**not bold** _not italic_ [not a link](http://example.com) <b>not bold either</b> $$x^2$$",
             "    four spaces, then # not a heading"]
    for text in texts:
        chat.ask(text)

    assert chat.user_texts() == [t.strip() for t in texts]
    users = chat.page.locator(USER_MSG)
    for tag in ("img", "strong", "em", "b", "a", "code", "pre", "h1", ".katex"):
        expect(users.locator(tag)).to_have_count(0)
    assert not [u for u in requested if u.rstrip("/").endswith("/x")], requested
    # The assistant's Markdown is still Markdown: the help text is a bulleted list.
    expect(chat.page.locator(BOT_MSG).last.locator("li")).to_have_count(5)
    chat.assert_no_error()


# Stop ----------------------------------------------------------------------------------------------
def test_a_stopped_answer_says_so_on_screen_after_reload_and_in_the_export(launch_app, open_chat):
    app, url = launch_app(offline_token_delay=0.05)
    chat = open_chat(app, url)
    chat.send("Count to 300")
    chat.page.wait_for_function(
        """() => { const bots = document.querySelectorAll('#chatbot [data-testid="bot"]');
                   return bots.length >= 1 && /\\b8\\b/.test(bots[bots.length - 1].innerText); }""")
    chat.stop_button.click()
    expect(chat.stop_button).to_have_count(0)
    chat.wait_idle()
    expect(chat.bot_messages.last).to_contain_text(STOPPED)
    chat.wait_server(lambda: not chat.session().conversation.lock.locked(), "the stopped turn to be settled")

    chat.page.reload()
    chat.open()
    expect(chat.bot_messages.last).to_contain_text(STOPPED)
    assert chat.last_bot_text().startswith("1 2 3")
    chat.assert_no_error()


# Failures ------------------------------------------------------------------------------------------
def test_a_model_failure_is_one_sentence_and_the_box_returns_to_send(launch_app, open_chat, monkeypatch):
    import httpx
    import openai

    from agent.offline_model import OfflineChatModel

    real = OfflineChatModel._astream

    async def unreachable(self, messages, *args, **kwargs):
        if "unreachable" in messages[-1].text:
            raise openai.APIConnectionError(request=httpx.Request("POST", "http://model.invalid/v1"))
        async for chunk in real(self, messages, *args, **kwargs):
            yield chunk

    monkeypatch.setattr(OfflineChatModel, "_astream", unreachable)
    app, url = launch_app()
    chat = open_chat(app, url)
    chat.ask("My name is Carol")
    assert MODEL_UNREACHABLE in chat.ask("Is the model unreachable?")
    expect(chat.textarea).to_be_editable()
    expect(chat.stop_button).to_have_count(0)
    chat.assert_no_error()
    # The turn is kept (Retry can send it again) and the next one works.
    assert user_memory(chat) == ["My name is Carol", "Is the model unreachable?"]
    assert chat.ask("What's my name?") == "Your name is Carol."


def test_a_store_failure_keeps_the_message_and_says_what_to_do(launch_app, open_chat, monkeypatch):
    app, url = launch_app()
    chat = open_chat(app, url)
    chat.ask("My name is Carol")
    real = app.manager.record_turn

    async def store_down(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(app.manager, "record_turn", store_down)
    text = f"Add 2 {uuid.uuid4().hex[:6]} to my cart"
    chat.arm()
    chat.send(text)
    expect(chat.notice).to_contain_text(STORE_DOWN)
    chat.wait_idle()
    expect(chat.textarea).to_have_value(text)  # nothing was stored, so the text is back in the box
    assert chat.user_texts() == ["My name is Carol"]
    chat.assert_no_error()

    monkeypatch.setattr(app.manager, "record_turn", real)
    chat.textarea.press("Enter")
    chat.wait_turn_done(min_users=2)
    assert chat.user_texts() == ["My name is Carol", text]
    expect(chat.notice).to_be_hidden()


# Sidebar -------------------------------------------------------------------------------------------
SIDEBAR, CONVERSATION = _E2E.SIDEBAR, _E2E.CONVERSATION
# Whether a loading overlay or progress bar ever showed over the conversation list since watch_list().
WATCH_LIST_JS = """() => {
  window.__listBusy = [];
  const list = document.querySelector('#conversations');
  const block = list.closest('.block') || list.parentElement;
  const check = () => {
    const busy = block.querySelectorAll('[data-testid="status-tracker"]:not(.hide), .eta-bar, .progress-bar');
    if (busy.length || block.classList.contains('pending')) window.__listBusy.push(block.className);
  };
  new MutationObserver(check).observe(block, {subtree: true, childList: true, attributes: true});
}"""


def titles(chat) -> list[str]:
    return [t.strip() for t in chat.page.locator(CONVERSATION + " .cmw-title").all_inner_texts()]


def test_sidebar_lists_new_chats_at_once_and_highlights_the_current_one(launch_app, open_chat):
    app, url = launch_app()
    chat = open_chat(app, url)
    expect(chat.current_conversation).to_have_count(1)
    expect(chat.current_conversation).to_contain_text("New chat")  # before its first message
    chat.page.evaluate(WATCH_LIST_JS)

    chat.ask("My name is Carol")
    expect(chat.current_conversation).to_contain_text("My name is Carol")
    expect(chat.page.locator(CONVERSATION + " .cmw-when").first).to_have_text("just now")
    chat.page.locator("#new-chat").click()
    expect(chat.user_messages).to_have_count(0)
    expect(chat.conversations).to_have_count(2)
    expect(chat.current_conversation).to_contain_text("New chat")
    chat.page.locator(CONVERSATION, has_text="My name is Carol").click()
    expect(chat.user_messages).to_have_count(1)
    expect(chat.current_conversation).to_contain_text("My name is Carol")
    chat.page.locator("#new-chat").click()
    expect(chat.user_messages).to_have_count(0)
    expect(chat.current_conversation).to_contain_text("New chat")
    chat.ask("Add 2 apples to my cart")
    expect(chat.page.locator(CONVERSATION + " .cmw-title")).to_have_text(["Add 2 apples to my cart", "My name is Carol"])

    chat.page.locator(CONVERSATION, has_text="My name is Carol").click()
    # both conversations hold one message: wait for the switch by its text, not by the count
    expect(chat.user_messages).to_have_text(["My name is Carol"])
    assert chat.user_texts() == ["My name is Carol"]
    expect(chat.current_conversation).to_contain_text("My name is Carol")
    assert chat.ask("What's my name?") == "Your name is Carol."
    assert chat.page.evaluate("() => window.__listBusy") == [], "a loading overlay showed over the list"
    chat.assert_no_error()


def test_rename_in_place_keeps_the_title_literal(launch_app, open_chat):
    app, url = launch_app()
    chat = open_chat(app, url)
    chat.ask("My name is Carol")
    item = chat.current_conversation
    item.hover()
    item.locator(".cmw-rename").click()
    box = item.locator("input.cmw-rename-input")
    expect(box).to_be_focused()
    expect(box).to_have_value("My name is Carol")
    box.fill("<b>Carol's</b> list")
    box.press("Enter")
    expect(chat.current_conversation.locator(".cmw-title")).to_have_text("<b>Carol's</b> list")
    # Escape cancels.
    chat.current_conversation.hover()
    chat.current_conversation.locator(".cmw-rename").click()
    chat.current_conversation.locator("input.cmw-rename-input").fill("not this")
    chat.current_conversation.locator("input.cmw-rename-input").press("Escape")
    expect(chat.current_conversation.locator(".cmw-title")).to_have_text("<b>Carol's</b> list")

    chat.page.reload()
    chat.open()
    expect(chat.current_conversation.locator(".cmw-title")).to_have_text("<b>Carol's</b> list")
    expect(chat.page.locator("#conversations b")).to_have_count(0)
    chat.assert_no_error()


def test_delete_asks_first_and_cancel_keeps_the_conversation(launch_app, open_chat):
    app, url = launch_app()
    chat = open_chat(app, url)
    chat.ask("My name is Carol")
    chat.page.locator("#new-chat").click()
    expect(chat.conversations).to_have_count(2)
    chat.ask("Add 2 apples to my cart")
    doomed = chat.page.locator(CONVERSATION, has_text="My name is Carol")

    doomed.hover()
    doomed.locator(".cmw-delete").click()
    expect(doomed.locator(".cmw-confirm")).to_be_visible()
    doomed.locator(".cmw-cancel").click()
    expect(doomed.locator(".cmw-confirm")).to_be_hidden()
    expect(chat.conversations).to_have_count(2)

    doomed.hover()
    doomed.locator(".cmw-delete").click()
    doomed.locator(".cmw-confirm-delete").click()
    expect(chat.conversations).to_have_count(1)
    assert titles(chat) == ["Add 2 apples to my cart"]
    assert chat.user_texts() == ["Add 2 apples to my cart"]  # the chat shown was another one: untouched

    # Deleting the conversation on screen empties the chat and starts a new one.
    current = chat.current_conversation
    current.hover()
    current.locator(".cmw-delete").click()
    current.locator(".cmw-confirm-delete").click()
    expect(chat.user_messages).to_have_count(0)
    expect(chat.current_conversation).to_contain_text("New chat")
    assert DONT_KNOW_NAME in chat.ask("What's my name?")
    chat.assert_no_error()


DONT_KNOW_NAME = "don't know"


# Phone ---------------------------------------------------------------------------------------------
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}


def test_phone_shows_the_chat_and_the_message_box_on_the_first_screen(launch_app, open_chat, browser):
    app, url = launch_app()
    person = browser.new_context(**PHONE)
    try:
        chat = open_chat(app, url, person=person)
        expect(chat.page.locator(SIDEBAR)).not_to_have_class(re.compile(r"\bopen\b"))  # closed on a phone
        for text in ("My name is Carol", "Add 2 apples to my cart", "Add quinoa to my cart", "Show my cart"):
            chat.ask(text)
        height = PHONE["viewport"]["height"]
        box = chat.textarea.bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= height, box
        latest = chat.bot_messages.last.bounding_box()
        assert latest["y"] < height and latest["y"] + latest["height"] > 0, latest
        assert chat.page.evaluate("() => document.scrollingElement.scrollTop") == 0
        save_docs_picture(chat, "phone.png")

        # The sidebar opens from its button and closes again once a conversation is picked.
        chat.page.locator(SIDEBAR + " .toggle-button").click()
        expect(chat.page.locator(SIDEBAR)).to_have_class(re.compile(r"\bopen\b"))
        chat.page.locator("#new-chat").click()
        expect(chat.user_messages).to_have_count(0)
        expect(chat.current_conversation).to_contain_text("New chat")
        chat.page.locator(CONVERSATION, has_text="My name is Carol").click()
        expect(chat.page.locator(SIDEBAR)).not_to_have_class(re.compile(r"\bopen\b"))
        expect(chat.user_messages).to_have_count(4)
        chat.assert_no_error()
    finally:
        person.close()


def test_desktop_picture(launch_app, open_chat, browser):
    """The README's desktop picture: sidebar with two conversations, a chat with a tool bubble."""
    app, url = launch_app()
    person = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        chat = open_chat(app, url, person=person)
        chat.ask("My name is Carol")
        chat.page.locator("#new-chat").click()
        expect(chat.user_messages).to_have_count(0)
        for text in ("My name is Alice", "Add 2 apples to my cart", "Add quinoa to my cart", "Show my cart"):
            chat.ask(text)
        expect(chat.conversations).to_have_count(2)
        save_docs_picture(chat, "desktop.png")
        chat.assert_no_error()
    finally:
        person.close()


def save_docs_picture(chat, name: str) -> None:
    """The viewport as a person sees it, to test-results/; to docs/ when missing or on request."""
    shot = _E2E.RESULTS / name
    shot.parent.mkdir(parents=True, exist_ok=True)
    chat.page.mouse.move(0, 0)
    chat.page.screenshot(path=str(shot))
    docs = Path(__file__).resolve().parents[2] / "docs" / name
    if not docs.exists() or os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(shot, docs)


# Gradio's per-session state ------------------------------------------------------------------------
def gradio_state_text(app, session_hash: str, component_id: int | None = None) -> str:
    """Everything Gradio keeps for this tab (or for one component of it), as text to search in."""
    state = app.demo.state_holder[session_hash]
    if component_id is not None:
        return repr(state.config_values.get(component_id))
    return repr(state.config_values) + repr(state.state_data)


def test_typed_text_does_not_stay_in_gradios_state(launch_app, open_chat):
    app, url = launch_app(max_message_chars=50)
    chat = open_chat(app, url)
    box_id = next(b._id for b in app.demo.blocks.values() if getattr(b, "elem_id", None) == "message")
    refused = "canary-" + uuid.uuid4().hex + " " + "x" * 60
    refuse(chat, refused, too_long_message(50))
    expect(chat.textarea).to_have_value(refused)  # on screen, where the person can shorten it...
    chat.wait_server(lambda: refused not in gradio_state_text(app, chat.session_hash),
                     "Gradio's state to forget the refused text")  # ...but not in the server's state
    sent = "My name is Carol" + uuid.uuid4().hex[:6]
    chat.textarea.fill("")
    chat.ask(sent)
    # The chat shows it (so Gradio's copy of the chat holds it); the message box's copy does not.
    chat.wait_server(lambda: sent not in gradio_state_text(app, chat.session_hash, box_id),
                     "Gradio's copy of the message box to be emptied")


def test_example_chips_in_the_empty_chat_send_their_text(launch_app, open_chat):
    app, url = launch_app()
    chat = open_chat(app, url)
    chips = chat.page.locator("#chatbot .example")
    expect(chips).to_have_count(6)
    expect(chat.page.locator("#chatbot .placeholder")).to_contain_text("offline demo model")  # the full banner
    chat.arm()
    chips.filter(has_text="My name is Alice").click()
    chat.wait_turn_done(min_users=1)
    assert chat.user_texts() == ["My name is Alice"] and chat.last_bot_text().startswith("Nice to meet you, Alice")
    expect(chips).to_have_count(0)  # gone once the chat has started; the header keeps a one-line badge
    expect(chat.page.locator("#model-banner")).to_contain_text("offline demo model")
    chat.assert_no_error()
