"""Real-browser fixtures: Debian's chromium driven by playwright's sync API against the in-process app.

Every test gets people (browser contexts) and tabs (pages) from the ``open_chat`` factory; each tab is
wrapped in a :class:`ChatPage` that knows the app's selectors. After every test, each tab it opened is
screenshotted to ``test-results/e2e/<test>.png`` (``<test>-2.png``... for further tabs), pass or fail.

Outside CI a missing chromium skips these tests with the reason; with ``CI=true`` it fails them.
Never run ``playwright install``: the tests use ``/usr/bin/chromium`` (``apt-get install chromium``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "test-results" / "e2e"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IN_CI = os.environ.get("CI", "").lower() == "true"
TIMEOUT_MS = 15_000  # any single wait; a healthy turn takes well under a second

# Selectors, checked against the DOM Gradio 6.31 renders for ui/layout.py.
TEXTAREA = "#message textarea"
STOP = '#message [data-testid="stop-button"]'
CHAT_LOG = '#chatbot [role="log"]'
USER_MSG = '#chatbot [data-testid="user"]'
BOT_MSG = '#chatbot [data-testid="bot"]'
TOOL_GROUP = "#chatbot .thought-group"  # a message with metadata.title: a collapsible tool bubble
CLEAR = '#chatbot button[aria-label="Clear"]'
RETRY = '#chatbot button[aria-label="Retry"]'
UNDO = '#chatbot button[aria-label="Undo"]'


# A turn is running while the textbox is disabled and shows a stop button (ui/layout.py: start/finish).
# A MutationObserver notes that this happened, however briefly, so a fast turn cannot be missed.
ARM_JS = """() => {
  window.__e2eBusy = false;
  if (window.__e2eObserver) window.__e2eObserver.disconnect();
  const box = document.querySelector('#message');
  window.__e2eObserver = new MutationObserver((records) => {
    for (const r of records) {
      const disabledToggled = r.type === 'attributes' && r.attributeName === 'disabled'
                              && r.target.tagName === 'TEXTAREA';
      if (disabledToggled || box.querySelector('[data-testid="stop-button"]')) window.__e2eBusy = true;
    }
  });
  window.__e2eObserver.observe(box, {subtree: true, childList: true, attributes: true,
                                     attributeFilter: ['disabled']});
}"""


def _require_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    if IN_CI:
        pytest.fail(f"chromium not found at {CHROMIUM}; CI must install it (apt-get install chromium)")
    pytest.skip(f"chromium not found at {CHROMIUM}; apt-get install chromium")


def run_async(coro):
    """Run a coroutine to completion from test code, off playwright's event loop (in a worker thread)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=30)


@pytest.fixture(scope="session")
def browser():
    _require_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the venv has it
        if IN_CI:
            pytest.fail("the playwright python package is not installed")
        pytest.skip("the playwright python package is not installed (pip install playwright)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class ChatPage:
    """One browser tab showing the app: act like a user, read what a user sees."""

    def __init__(self, page, app, base_url: str):
        self.page = page
        self.app = app
        self.base_url = base_url
        self.textarea = page.locator(TEXTAREA)
        self.stop_button = page.locator(STOP)
        self.user_messages = page.locator(USER_MSG)
        self.bot_messages = page.locator(BOT_MSG)
        self.tool_bubbles = page.locator(TOOL_GROUP)
        self.chat_log = page.locator(CHAT_LOG)

    @property
    def context(self):
        return self.page.context

    # -- lifecycle ----------------------------------------------------------------------------
    def open(self) -> "ChatPage":
        from playwright.sync_api import expect

        self.page.goto(self.base_url)
        expect(self.textarea).to_be_editable()
        self.page.wait_for_function("() => !!window.__gradio_session_hash__")
        return self

    @property
    def session_hash(self) -> str:
        return self.page.evaluate("() => window.__gradio_session_hash__")

    def session(self):
        """The server's Session for this tab (None before its first message)."""
        return self.app.registry.peek(self.session_hash)

    def memory(self):
        """This tab's server-side conversation (a Transcript), loaded like the app does."""
        session = self.session()
        assert session is not None, "the server has no session for this tab"
        return run_async(session.memory.load())

    def wait_server(self, predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT_MS / 1000) -> None:
        """Synchronisation only: poll server state while letting playwright pump its events."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for the server: {what}")
            self.page.wait_for_timeout(20)

    # -- acting -------------------------------------------------------------------------------
    def send(self, text: str) -> None:
        """Type a message and press Enter; returns at once (the answer may still be streaming)."""
        from playwright.sync_api import expect

        expect(self.textarea).to_be_editable()
        self.textarea.fill(text)
        self.textarea.press("Enter")

    def ask(self, text: str) -> str:
        """Send a message, wait for the whole answer; returns the text of the last bot message."""
        self.arm()
        self.send(text)
        self.wait_turn_done()
        return self.last_bot_text()

    def arm(self) -> None:
        """Start watching for the page to go busy (call before the action that starts a turn)."""
        self.page.evaluate(ARM_JS)

    def wait_turn_done(self) -> None:
        """After :meth:`arm` and an action: wait until the page went busy and is idle again."""
        self.page.wait_for_function("() => window.__e2eBusy === true")
        self.wait_idle()

    def wait_idle(self) -> None:
        from playwright.sync_api import expect

        expect(self.stop_button).to_have_count(0)
        expect(self.textarea).to_be_editable()

    def _click_last(self, selector: str) -> None:
        """Click the last chatbot action button of a kind (Retry/Undo sit under the last answer)."""
        from playwright.sync_api import expect

        button = self.page.locator(selector).last
        expect(button).to_be_enabled()
        button.click()

    def click_retry(self) -> None:
        self._click_last(RETRY)

    def click_undo(self) -> None:
        self._click_last(UNDO)

    def click_clear(self) -> None:
        self._click_last(CLEAR)

    # -- reading ------------------------------------------------------------------------------
    def last_bot_text(self) -> str:
        return self.bot_messages.last.inner_text().strip() if self.bot_messages.count() else ""

    def user_texts(self) -> list[str]:
        return [t.strip() for t in self.user_messages.all_inner_texts()]

    def chat_text(self) -> str:
        return self.chat_log.inner_text()

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=True)


def _file_stem(nodeid_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid_name).strip("_")


@pytest.fixture
def open_chat(browser, request) -> Iterator[Callable[..., ChatPage]]:
    """Factory: ``open_chat(app, base_url, person=None)`` opens a new tab for ``person`` (a browser
    context, i.e. one person's browser; a new one when None) and returns its :class:`ChatPage`."""
    contexts, pages = [], []

    def open_(app, base_url: str, person=None) -> ChatPage:
        if person is None:
            person = browser.new_context(viewport={"width": 900, "height": 900})
            person.set_default_timeout(TIMEOUT_MS)
            contexts.append(person)
        page = person.new_page()
        chat = ChatPage(page, app, base_url)
        pages.append(chat)
        return chat.open()

    yield open_

    stem = _file_stem(request.node.name)
    for i, chat in enumerate(pages, start=1):
        try:
            if not chat.page.is_closed():
                chat.screenshot(RESULTS / (f"{stem}.png" if i == 1 else f"{stem}-{i}.png"))
        except Exception:  # a screenshot must never hide the test's own result
            pass
    for context in contexts:
        context.close()
