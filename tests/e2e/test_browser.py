"""Two people, two browsers, one server: what real users see in a real browser (issue #5).

Each test launches the real app in-process (``launch_app``), drives Debian's chromium through
playwright, and asserts on what a user would notice on the page. Canary names and items are unique per
run, so any text that crosses from one person (or tab) to another is caught in the page's DOM.
Run alone with ``pytest -m browser tests/e2e``.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from playwright.sync_api import expect


pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "test-results" / "e2e"

DONT_KNOW = "don't know"


def canary(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def side_by_side(left, right, path) -> None:
    """Save two full-page screenshots next to each other as one PNG."""
    from PIL import Image

    RESULTS.mkdir(parents=True, exist_ok=True)
    shots = []
    for n, chat in enumerate((left, right)):
        # For the picture only: let the chat grow to its content so the whole conversation shows.
        chat.page.add_style_tag(content="#chatbot { height: auto !important; max-height: none !important; }")
        shot = RESULTS / f"_side_{n}.png"
        chat.screenshot(shot)
        shots.append(Image.open(shot).convert("RGB"))
    gap = 16
    canvas = Image.new("RGB", (sum(s.width for s in shots) + gap, max(s.height for s in shots)), "#9ca3af")
    canvas.paste(shots[0], (0, 0))
    canvas.paste(shots[1], (shots[0].width + gap, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)
    for n in range(2):
        (RESULTS / f"_side_{n}.png").unlink(missing_ok=True)


# 1 ------------------------------------------------------------------------------------------------
def test_two_people_see_only_their_own_conversation_and_cart(launch_app, open_chat):
    app, url = launch_app()
    alice, bob = open_chat(app, url), open_chat(app, url)  # two browser contexts: two people
    assert alice.session_hash != bob.session_hash
    name_a, name_b = canary("Zed"), canary("Kit")
    item_a, item_b = canary("Gizmo"), canary("Widget")  # custom (uncatalogued) items: unique canaries
    mine = {id(alice): (name_a, item_a, "Apples"), id(bob): (name_b, item_b, "Quinoa")}

    def never_leaked() -> None:
        for me, other in ((alice, bob), (bob, alice)):
            html = me.page.content()
            for secret in mine[id(other)]:
                assert secret not in html, f"{secret!r} of the other person shows up on this page"

    # Both people talk at the same time: send on both pages, then wait for both answers.
    script = [(f"My name is {name_a}", f"My name is {name_b}"),
              ("Add 2 apples to my cart", "Add quinoa to my cart"),
              (f"Add 3 {item_a} to my cart", f"Add 1 {item_b} to my cart")]
    for text_a, text_b in script:
        alice.arm(), bob.arm()
        alice.send(text_a)
        bob.send(text_b)
        alice.wait_turn_done(), bob.wait_turn_done()
        never_leaked()

    assert alice.ask("What's my name?") == f"Your name is {name_a}."
    assert bob.ask("What's my name?") == f"Your name is {name_b}."
    cart_a, cart_b = alice.ask("Show my cart"), bob.ask("Show my cart")
    assert "2 × Apples" in cart_a and f"3 × {item_a}" in cart_a
    assert "Quinoa" in cart_b and f"1 × {item_b}" in cart_b
    assert "Quinoa" not in cart_a and item_b not in cart_a
    assert "Apples" not in cart_b and item_a not in cart_b
    never_leaked()
    # The whole visible conversation of each person, word for word, mentions nobody else.
    assert "apple" not in bob.chat_text().lower() and "quinoa" not in alice.chat_text().lower()

    side_by_side(alice, bob, ROOT / "docs" / "two-people.png")


# 2 ------------------------------------------------------------------------------------------------
def test_two_tabs_of_one_browser_are_separate_conversations(launch_app, open_chat):
    app, url = launch_app()
    tab_a = open_chat(app, url)
    tab_b = open_chat(app, url, person=tab_a.context)  # same person, second tab
    assert tab_a.session_hash != tab_b.session_hash
    name = canary("Zed")

    assert name in tab_a.ask(f"My name is {name}")
    tab_a.ask("Add 2 apples to my cart")

    answer = tab_b.ask("What's my name?")
    assert DONT_KNOW in answer and name not in answer
    assert "empty" in tab_b.ask("Show my cart").lower()
    assert name not in tab_b.page.content()
    assert tab_b.user_texts() == ["What's my name?", "Show my cart"]
    # ...and tab A still has its own conversation.
    assert tab_a.ask("What's my name?") == f"Your name is {name}."


# 3 ------------------------------------------------------------------------------------------------
def test_tool_call_is_a_collapsible_bubble_from_pending_to_done(launch_app, open_chat, monkeypatch):
    import agent.tools

    # A slow tool (as a real one may be) so the pending state stays on screen long enough to see.
    real_add_op = agent.tools.add_op

    def slow_add_op(*args, **kwargs):
        import time

        time.sleep(0.8)
        return real_add_op(*args, **kwargs)

    monkeypatch.setattr(agent.tools, "add_op", slow_add_op)
    app, url = launch_app()
    chat = open_chat(app, url)
    chat.arm()
    chat.send("Add 2 apples to my cart")

    bubble = chat.tool_bubbles.last
    title = bubble.locator(".title")
    # Pending: the titled bubble is open, with a spinner and busy state, before any answer text.
    expect(title).to_contain_text("🛠️ add to cart")
    expect(title.locator(".loading-spinner")).to_be_visible()
    expect(chat.stop_button).to_be_visible()
    assert "Added 2 × Apples" not in chat.chat_text()

    chat.wait_turn_done()
    # Done: the spinner is gone, the tool's run time is shown, the bubble is collapsed...
    expect(title.locator(".loading-spinner")).to_have_count(0)
    expect(title.locator(".duration")).to_have_text(re.compile(r"\(\d+(\.\d+)?m?s\)"))
    expect(title).to_have_text(re.compile(r"🛠️ add to cart"))
    expect(title).not_to_have_class(re.compile(r"\bexpanded\b"))
    expect(bubble.locator(".content")).to_have_count(0)
    # ...the answer follows it...
    assert chat.last_bot_text().startswith("Added 2 × Apples")
    # ...and clicking the title opens the tool's result; clicking again closes it.
    title.click()
    expect(title).to_have_class(re.compile(r"\bexpanded\b"))
    expect(bubble.locator(".content")).to_contain_text("Added 2 × Apples ($0.50 each) to your cart.")
    title.click()
    expect(bubble.locator(".content")).to_have_count(0)
    assert len(chat.tool_bubbles.all()) == 1


# 4 ------------------------------------------------------------------------------------------------
def test_stop_keeps_the_partial_answer_and_memory_agrees(launch_app, open_chat):
    app, url = launch_app(offline_token_delay=0.05)
    chat = open_chat(app, url)
    name = canary("Zed")
    chat.ask(f"My name is {name}")

    chat.send("Count to 300")
    expect(chat.stop_button).to_be_visible()
    chat.page.wait_for_function(
        """() => { const bots = document.querySelectorAll('#chatbot [data-testid="bot"]');
                   return bots.length >= 2 && /\\b12\\b/.test(bots[bots.length - 1].innerText); }""")
    chat.stop_button.click()

    # Streaming stops: the page is idle again and the answer no longer grows.
    chat.wait_idle()
    session = chat.session()
    chat.wait_server(lambda: session.stats.stopped_turns == 1 and not session.turn_lock.locked(),
                     "the server to settle the stopped turn")
    partial = chat.last_bot_text()
    chat.page.wait_for_timeout(1000)
    assert chat.last_bot_text() == partial, "the answer kept growing after Stop"
    numbers = partial.split()
    assert 12 <= len(numbers) < 300 and numbers == [str(n) for n in range(1, len(numbers) + 1)], partial
    assert chat.user_texts() == [f"My name is {name}", "Count to 300"]

    # The agent remembers exactly what the user saw of the stopped answer.
    memory = chat.memory().messages
    last_ai = [m for m in memory if isinstance(m, AIMessage)][-1]
    assert last_ai.text.strip() == partial
    assert isinstance(memory[-2], HumanMessage) and memory[-2].text == "Count to 300"

    # The next message works, with the earlier conversation intact, and the partial answer stays.
    assert chat.ask("What's my name?") == f"Your name is {name}."
    assert chat.user_texts() == [f"My name is {name}", "Count to 300", "What's my name?"]
    assert partial in [t.strip() for t in chat.bot_messages.all_inner_texts()]
    memory = chat.memory().messages
    assert [m.text.strip() for m in memory if isinstance(m, AIMessage)][-2] == partial


# 5 ------------------------------------------------------------------------------------------------
def test_undo_forgets_the_last_message(launch_app, open_chat):
    app, url = launch_app()
    chat = open_chat(app, url)
    name = canary("Zed")
    chat.ask("Add 2 apples to my cart")
    chat.ask(f"My name is {name}")

    chat.click_undo()
    # The message leaves the chat and comes back into the textbox, as in any chat app.
    expect(chat.textarea).to_have_value(f"My name is {name}")
    expect(chat.user_messages).to_have_count(1)
    assert name not in chat.chat_text()
    chat.textarea.fill("")

    answer = chat.ask("What's my name?")
    assert DONT_KNOW in answer and name not in answer
    # Undo once more (this time the name question), then undo the cart line: the cart is empty.
    chat.click_undo()
    expect(chat.user_messages).to_have_count(1)
    chat.click_undo()
    expect(chat.user_messages).to_have_count(0)
    expect(chat.textarea).to_have_value("Add 2 apples to my cart")
    chat.textarea.fill("")
    assert "empty" in chat.ask("Show my cart").lower()
    assert chat.user_texts() == ["Show my cart"]


def test_clear_starts_an_empty_conversation(launch_app, open_chat):
    app, url = launch_app()
    chat = open_chat(app, url)
    name = canary("Zed")
    chat.ask(f"My name is {name}")
    chat.ask("Add 2 apples to my cart")
    conversation = chat.session().memory.conversation_id

    chat.click_clear()
    expect(chat.user_messages).to_have_count(0)
    expect(chat.bot_messages).to_have_count(0)
    chat.wait_server(lambda: chat.session().memory.conversation_id != conversation, "Clear to reach the server")

    answer = chat.ask("What's my name?")
    assert DONT_KNOW in answer and name not in answer
    assert "empty" in chat.ask("Show my cart").lower()
    assert chat.user_texts() == ["What's my name?", "Show my cart"]
    assert name not in chat.page.content()
    # A reload shows the conversation the server has: the cleared one stays gone.
    chat.page.reload()
    expect(chat.textarea).to_be_editable()


def test_retry_answers_again_and_shows_one_copy(launch_app, open_chat):
    app, url = launch_app()
    chat = open_chat(app, url)
    name = canary("Zed")
    chat.ask(f"My name is {name}")
    first = chat.ask("Add 2 apples to my cart")
    assert first.startswith("Added 2 × Apples")

    chat.arm()
    chat.click_retry()
    chat.wait_turn_done()
    assert chat.last_bot_text() == first
    assert chat.user_texts() == [f"My name is {name}", "Add 2 apples to my cart"]
    assert len(chat.tool_bubbles.all()) == 1

    # Memory dropped the first attempt: still 2 apples, not 4, and the name is remembered.
    cart = chat.ask("Show my cart")
    assert "2 × Apples" in cart and "4 × Apples" not in cart
    assert chat.ask("What's my name?") == f"Your name is {name}."
    # Retrying a plain answer re-answers it once, too.
    chat.arm()
    chat.click_retry()
    chat.wait_turn_done()
    assert chat.user_texts() == [f"My name is {name}", "Add 2 apples to my cart", "Show my cart",
                                 "What's my name?"]
    assert chat.last_bot_text() == f"Your name is {name}."
    humans = [m.text for m in chat.memory().messages if isinstance(m, HumanMessage)]
    assert humans == chat.user_texts()
