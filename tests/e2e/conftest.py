"""Real-browser fixtures: Debian's chromium driven by playwright's sync API against the in-process app.

Every test gets people (browser contexts) and tabs (pages) from the ``open_chat`` factory; each tab is
wrapped in a :class:`ChatPage` that knows the app's selectors. After every test, each tab it opened is
screenshotted to ``test-results/e2e/<test>.png`` (``<test>-2.png``... for further tabs), pass or fail.

Outside CI a missing chromium skips these tests with the reason; with ``CI=true`` it fails them.
Never run ``playwright install``: the tests use ``/usr/bin/chromium`` (``apt-get install chromium``).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from gradio_compat import server_loop

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # reported by the ``browser`` fixture: a skip locally, a failure in CI
    expect = sync_playwright = None

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
NOTICE = "#notice"  # why a message was not sent, or what failed (above the message box)
SIDEBAR = "#sidebar"  # gr.Sidebar: class "open" while shown; its ".toggle-button" opens and closes it
CONVERSATION = "#conversations .cmw-item"  # one conversation in the sidebar (ui/sidebar.py)


# Something is running for a tab while its textbox is disabled and shows a stop button (a turn, see
# ui/layout.py start/finish) or while the chatbot's status tracker is shown (undo, clear). A
# MutationObserver notes that this happened, however briefly, so a fast event cannot be missed.
ARM_JS = """() => {
  window.__e2eBusy = false;
  if (window.__e2eObserver) window.__e2eObserver.disconnect();
  const box = document.querySelector('#message'), chat = document.querySelector('#chatbot');
  const tracker = () => chat.querySelector(':scope > [data-testid="status-tracker"]');
  window.__e2eObserver = new MutationObserver((records) => {
    for (const r of records) {
      const disabledToggled = r.type === 'attributes' && r.attributeName === 'disabled'
                              && r.target.tagName === 'TEXTAREA';
      const trackerShown = tracker() && !tracker().classList.contains('hide');
      if (disabledToggled || trackerShown || box.querySelector('[data-testid="stop-button"]')) {
        window.__e2eBusy = true;
      }
    }
  });
  window.__e2eObserver.observe(box, {subtree: true, childList: true, attributes: true,
                                     attributeFilter: ['disabled']});
  window.__e2eObserver.observe(chat, {subtree: true, childList: true, attributes: true,
                                      attributeFilter: ['class']});
}"""
# Idle: no stop button, the textbox enabled, the chatbot's status tracker hidden (or showing an error:
# tests check errors on their own), and the conversation list rendered (the page-load chain fills it
# last, and shows no progress of its own). All are read at the same instant.
IDLE_JS = """() => {
  const box = document.querySelector('#message'), area = box && box.querySelector('textarea');
  const tracker = document.querySelector('#chatbot > [data-testid="status-tracker"]');
  const trackerIdle = !tracker || tracker.classList.contains('hide') || !!tracker.querySelector('.error');
  const loaded = !!document.querySelector('#conversations .cmw-item');
  return !!area && !area.disabled && !box.querySelector('[data-testid="stop-button"]') && trackerIdle && loaded;
}"""
# Done: the page went busy since arm(), is idle now, and shows at least ``minUsers`` user messages.
DONE_JS = """(minUsers) => window.__e2eBusy === true && (""" + IDLE_JS + """)()
  && document.querySelectorAll('#chatbot [data-testid="user"]').length >= minUsers"""
# Watch a tab's whole DOM for strings that must never appear in it, at every change, not just at the
# moments a test looks; what was seen, and in what, is kept in window.__e2eLeaks.
WATCH_JS = """(secrets) => {
  window.__e2eLeaks = window.__e2eLeaks || [];
  const check = () => {
    const html = document.documentElement.outerHTML;
    for (const s of secrets) {
      const at = html.indexOf(s);
      if (at >= 0 && !window.__e2eLeaks.some((l) => l.secret === s)) {
        window.__e2eLeaks.push({secret: s, context: html.slice(Math.max(0, at - 80), at + 40)});
      }
    }
  };
  new MutationObserver(check).observe(document.documentElement,
    {subtree: true, childList: true, characterData: true, attributes: true});
  check();
}"""
# What a user sees as "something went wrong": a component's status badge or a toast.
ERRORS_JS = """() => [...document.querySelectorAll(
    '[data-testid="status-tracker"]:not(.hide) .error, [data-testid="toast-body"]')]
  .filter((e) => e.offsetParent !== null).map((e) => e.innerText.trim() || e.className)"""


def _require_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    if IN_CI:
        pytest.fail(f"chromium not found at {CHROMIUM}; CI must install it (apt-get install chromium)")
    pytest.skip(f"chromium not found at {CHROMIUM}; apt-get install chromium")


def run_on_app_loop(app, coro, timeout: float = 30):
    """Run a coroutine on the app's own event loop (the server thread's), as a handler would.

    Async stores (aiosqlite, psycopg) are bound to that loop, so server memory is read there rather than
    from a loop of the test's own. The loop is found through the uvicorn server Gradio started.
    """
    loop = server_loop(app.demo)
    if loop is None:
        coro.close()
        raise RuntimeError("cannot find the app's event loop (is it launched?)")
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


@pytest.fixture(scope="module")
def chromium_launcher() -> Iterator[Callable[..., object]]:
    """Factory: ``chromium_launcher(extra_args=())`` returns a headless Debian chromium started with
    ``CHROMIUM_ARGS`` plus ``extra_args`` (e.g. ``("--test-third-party-cookie-phaseout",)``); one per
    distinct set of args, shared by the module's tests, all closed at the end of the module. It holds the
    module's one playwright driver (``chromium_launcher.playwright``, e.g. for a persistent context with
    its own browser preferences), which ``browser`` shares."""
    _require_chromium()
    if sync_playwright is None:
        if IN_CI:
            pytest.fail("the playwright python package is not installed")
        pytest.skip("the playwright python package is not installed (pip install playwright)")
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        launched: dict[tuple[str, ...], object] = {}

        def launch(extra_args=()):
            key = tuple(extra_args)
            if key not in launched:
                launched[key] = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=[*CHROMIUM_ARGS, *key])
            return launched[key]

        launch.playwright = pw
        yield launch
        for chromium in launched.values():
            chromium.close()


@pytest.fixture(scope="module")
def browser(chromium_launcher):
    """One chromium per test module. Not per session: while playwright's sync API is running it leaves
    an event loop marked running in this thread, which would break ``asyncio.run`` in later tests."""
    return chromium_launcher()


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
        self.notice = page.locator(NOTICE)
        self.conversations = page.locator(CONVERSATION)
        self.current_conversation = page.locator(CONVERSATION + ".current")

    @property
    def context(self):
        return self.page.context

    # -- lifecycle ----------------------------------------------------------------------------
    def open(self) -> "ChatPage":
        self.page.goto(self.base_url)
        expect(self.textarea).to_be_editable()
        self.page.wait_for_function("() => !!window.__gradio_session_hash__")
        self.page.wait_for_function(IDLE_JS)  # the page-load event (it fills the chat) has finished
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
        return run_on_app_loop(self.app, session.conversation.load())

    def wait_server(self, predicate: Callable[[], bool], what: str,
                    timeout: float = TIMEOUT_MS / 1000) -> None:
        """Synchronisation only: poll server state while letting playwright pump its events."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for the server: {what}")
            self.page.wait_for_timeout(20)

    # -- acting -------------------------------------------------------------------------------
    def send(self, text: str) -> None:
        """Type a message and press Enter; returns at once (the answer may still be streaming)."""
        expect(self.textarea).to_be_editable()
        self.textarea.fill(text)
        self.textarea.press("Enter")

    def ask(self, text: str) -> str:
        """Send a message, wait for the whole answer; returns the text of the last bot message."""
        shown = self.user_messages.count()
        self.arm()
        self.send(text)
        self.wait_turn_done(min_users=shown + 1)
        return self.last_bot_text()

    def arm(self) -> None:
        """Start watching for the page to go busy (call before the action that starts a turn)."""
        self.page.evaluate(ARM_JS)

    def wait_turn_done(self, min_users: int = 0) -> None:
        """After :meth:`arm` and an action: wait until the page went busy and is idle again (and shows
        at least ``min_users`` user messages: a sent message is on screen before its turn counts)."""
        self.page.wait_for_function(DONE_JS, arg=min_users)

    def wait_idle(self) -> None:
        self.page.wait_for_function(IDLE_JS)

    def _click_last(self, selector: str) -> None:
        """Click the last chatbot action button of a kind (Retry/Undo sit under the last answer)."""
        button = self.page.locator(selector).last
        expect(button).to_be_enabled()
        button.click()

    def click_retry(self) -> None:
        """Click Retry under the last answer and wait until the new answer is complete."""
        self.arm()
        self._click_last(RETRY)
        self.wait_turn_done()

    def click_undo(self) -> None:
        """Click Undo under the last answer and wait until the server has answered the event."""
        self.arm()
        self._click_last(UNDO)
        self.wait_turn_done()

    def click_clear(self) -> None:
        """Click the chat's Clear (trash) button and wait until the server has answered the event."""
        self.arm()
        self._click_last(CLEAR)
        self.wait_turn_done()

    # -- reading ------------------------------------------------------------------------------
    def last_bot_text(self) -> str:
        return self.bot_messages.last.inner_text().strip() if self.bot_messages.count() else ""

    def watch_for(self, secrets: list[str]) -> None:
        """From now on, record any moment the page's DOM contains one of ``secrets``."""
        self.page.evaluate(WATCH_JS, secrets)

    def leaks(self) -> list[dict]:
        """What :meth:`watch_for` saw (empty when none of the secrets ever appeared)."""
        return self.page.evaluate("() => window.__e2eLeaks || []")

    def errors_shown(self) -> list[str]:
        """Error badges and toasts visible on the page (empty when all is well)."""
        return self.page.evaluate(ERRORS_JS)

    def assert_no_error(self, when: str = "") -> None:
        errors = self.errors_shown()
        assert not errors, f"the page shows an error{' ' + when if when else ''}: {errors}"

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
