"""The app where people meet it: inside another site's page, in a cross-site iframe (issue #9).

A Space page, or a website that embeds the app as a widget, shows it in an ``<iframe>`` from another
site. Browsers treat such a frame strictly: an ordinary (``SameSite=Lax``) cookie is never sent back from
it, unpartitioned third-party cookies are blocked, and ``sessionStorage`` throws (measured in
``/work/shared/notes/embedding.md``). Here a tiny parent site on ``http://localhost:<port>`` frames the
app served on ``http://127.0.0.1:<port>`` - two different sites, like ``huggingface.co`` and
``*.hf.space`` - and people chat inside the frame in Debian's chromium, launched normally and with
``--test-third-party-cookie-phaseout`` (Chrome's strictest third-party-cookie mode).

What must hold in the frame: the chat works without an error badge, an uncaught page error or a refused
request; the agent remembers within the conversation; reloading the parent page brings the conversation
back; a second person framing the same app sees nothing of the first. A browser that keeps no cookie at
all is told so (``#cookie-notice``) and still chats for the life of the tab. Another site's page cannot
call the app's API with the person's cookie unless the operator allowed that site. (Top-level use is
covered by ``test_browser.py``.)

Run alone with ``pytest tests/e2e/test_embedding.py``. Each parent page is screenshotted to
``test-results/e2e/``; the picture of the app inside the parent page, ``docs/embedded.png``, is written
by the ``[default]`` case of the first test when missing, and refreshed when ``UPDATE_DOCS_SCREENSHOTS=1``
(the same switch as ``docs/two-people.png``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

import pytest


def _e2e_conftest():
    """This folder's conftest module, as pytest loaded it (it is loaded before this module, whatever the
    import mode; a plain ``import conftest`` could find ``tests/conftest.py`` instead)."""
    path = Path(__file__).resolve().with_name("conftest.py")
    for module in list(sys.modules.values()):
        if Path(getattr(module, "__file__", None) or "").resolve() == path:
            return module
    raise ImportError(f"{path} is not loaded: run this module through pytest")


_E2E = _e2e_conftest()
ChatPage, IDLE_JS, RESULTS, TIMEOUT_MS = _E2E.ChatPage, _E2E.IDLE_JS, _E2E.RESULTS, _E2E.TIMEOUT_MS
CHROMIUM, CHROMIUM_ARGS, file_stem = _E2E.CHROMIUM, _E2E.CHROMIUM_ARGS, _E2E._file_stem

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import expect
except ImportError:  # the ``chromium_launcher`` fixture reports it: a skip locally, a failure in CI
    expect, PlaywrightTimeoutError = None, Exception

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
DONT_KNOW = "don't know"
COOKIE_NOTICE = "#cookie-notice"
VIEWPORT = {"width": 1000, "height": 1000}
PHASEOUT = "--test-third-party-cookie-phaseout"
MODES = {"default": (), "3pc-phaseout": (PHASEOUT,)}  # chromium's extra args per mode
# Chromium reports this to pages as an error event now and then (a resize observation was deferred to
# the next frame, by the spec's design); it is the browser's layout notice, not an exception of the app.
BENIGN_PAGE_ERRORS = ("ResizeObserver loop completed with undelivered notifications",)
# Chromium's own "Block all cookies" setting (chrome://settings/cookies), as a profile preference.
BLOCK_ALL_COOKIES = {"profile": {"default_content_setting_values": {"cookies": 2}}}

PARENT_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A site that embeds CMW Agent</title>
<style>body {{ margin: 0; font-family: sans-serif; background: #eef2f7; }}
header {{ padding: 10px 16px; background: #1f2937; color: #f9fafb; font-size: 15px; }}
main {{ padding: 12px 16px; }}</style></head>
<body><header>example shop (<code>{parent}</code>) &middot; help chat below, framed from
<code>{src}</code></header>
<main><iframe src="{src}" title="CMW Agent" style="width:100%;height:900px;border:1px solid #9ca3af;
border-radius:8px;background:white"></iframe></main></body></html>
"""


def canary(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


# -- the parent site --------------------------------------------------------------------------------
class ParentSite:
    """A tiny threaded HTTP server on a free port: another site (``http://localhost:<port>``, where the
    app is on ``127.0.0.1``) whose page frames the app once :meth:`frame` has named it."""

    def __init__(self):
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self.path.split("?", 1)[0] != "/" or site.html is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(site.html)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(site.html)

            def log_message(self, *args):  # keep the test output quiet
                pass

        self.html: bytes | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.origin = f"http://localhost:{self.server.server_port}"
        self.site = "http://localhost"  # what browsers key partitioned cookies by (scheme and host)
        self.url = self.origin + "/"
        threading.Thread(target=self.server.serve_forever, name="parent-site", daemon=True).start()

    def frame(self, app_url: str) -> str:
        """Serve a page whose body is an iframe of ``app_url``; returns the page's address."""
        self.html = PARENT_HTML.format(src=app_url, parent=self.url).encode("utf-8")
        return self.url

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def parent_site() -> Iterator[Callable[[], ParentSite]]:
    """Factory: ``parent_site()`` starts a :class:`ParentSite`; all are stopped after the test."""
    sites: list[ParentSite] = []

    def start() -> ParentSite:
        sites.append(ParentSite())
        return sites[-1]

    yield start
    for site in sites:
        site.close()


# -- one person's tab, watched ----------------------------------------------------------------------
class PageWatch:
    """What went wrong on one browser tab, its frames included (cross-site frames run in their own
    renderer; playwright reports them to the tab): uncaught errors, console errors, and responses from
    the app's server with an error status."""

    def __init__(self, page, app_url: str):
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.failed_responses: list[str] = []
        page.on("pageerror", self._on_page_error)
        page.on("console", lambda message: message.type == "error"
                and self.console_errors.append(message.text))
        page.on("response", lambda response: response.url.startswith(app_url) and response.status >= 400
                and self.failed_responses.append(f"{response.status} {response.request.method} "
                                                 f"{response.url[len(app_url) - 1:]}"))

    def _on_page_error(self, error) -> None:
        text = f"{error.name}: {error.message}"
        if not any(benign in text for benign in BENIGN_PAGE_ERRORS):
            self.page_errors.append(text)

    def refused(self) -> list[str]:
        return [r for r in self.failed_responses if r.startswith("403 ")]

    def report(self) -> str:
        return (f"page errors: {self.page_errors}; failed requests to the app: {self.failed_responses}; "
                f"console errors: {self.console_errors[:6]}")


class WatchedChat(ChatPage):
    """The app in a tab, framed or top-level. ``self.page`` is where the app's document is: the
    iframe's playwright ``Frame`` (it has the locator/evaluate API of a page, so every ChatPage action
    and reading works in it) or, top-level, the tab itself; ``self.tab`` is the browser tab."""

    def __init__(self, tab, document, app, app_url: str, watch: PageWatch):
        super().__init__(document, app, app_url)
        self.tab = tab
        self.watch = watch

    @property
    def context(self):
        return self.tab.context

    @classmethod
    def in_frame(cls, tab, app, app_url: str, watch: PageWatch) -> "WatchedChat":
        """The chat in the iframe of the parent page shown in ``tab``, once loaded and idle."""
        frame = tab.wait_for_selector("iframe").content_frame()
        assert frame is not None, "the parent page's iframe has no frame"
        chat = cls(tab, frame, app, app_url, watch)
        try:
            frame.wait_for_url(f"{app_url}**")
            chat.wait_ready()
        except (PlaywrightTimeoutError, AssertionError) as failure:
            raise AssertionError(f"the framed app did not become usable: {failure}; {watch.report()}") from None
        return chat

    @classmethod
    def top_level(cls, tab, app, app_url: str, watch: PageWatch) -> "WatchedChat":
        tab.goto(app_url)
        chat = cls(tab, tab, app, app_url, watch)
        chat.wait_ready()
        return chat

    def open(self) -> "WatchedChat":
        raise NotImplementedError("use WatchedChat.in_frame or WatchedChat.top_level")

    def wait_ready(self) -> None:
        expect(self.textarea).to_be_editable()
        self.page.wait_for_function("() => !!window.__gradio_session_hash__")
        self.page.wait_for_function(IDLE_JS)  # the page-load event (it fills the chat) has finished

    def wait_turn_done(self, min_users: int = 0) -> None:
        try:
            super().wait_turn_done(min_users)
        except PlaywrightTimeoutError:
            raise AssertionError(
                f"the chat did not finish its turn within {TIMEOUT_MS} ms; it shows "
                f"{self.user_messages.count()} user message(s), last answer {self.last_bot_text()!r}, "
                f"error badges/toasts {self.errors_shown()}; {self.watch.report()}") from None

    def assert_healthy(self, when: str = "") -> None:
        """No error badge or toast in the app, no uncaught error on the tab, no refused request."""
        self.assert_no_error(when)
        assert not self.watch.page_errors, f"uncaught errors on the page {when}: {self.watch.page_errors}"
        assert not self.watch.refused(), f"the app refused its own page's requests {when}: {self.watch.refused()}"

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tab.screenshot(path=str(path), full_page=True)

    def owner_cookies(self) -> list[dict]:
        # All of this context's cookies, filtered here: ``cookies(url)`` leaves out partitioned cookies
        # set in a cross-site frame (playwright 1.58).
        host = urlsplit(self.base_url).hostname
        return [c for c in self.context.cookies() if c["domain"] == host and c["name"].endswith("cmw_owner")]


class People:
    """Opens tabs for new people (browser contexts) and cleans up after the test: each tab is
    screenshotted to ``test-results/e2e/<test>[-n].png``, pass or fail, then every context closed."""

    def __init__(self, launcher, tmp_path: Path):
        self._launcher = launcher
        self._tmp_path = tmp_path
        self._contexts: list = []
        self._chats: list[WatchedChat] = []

    def _tab(self, person, app_url: str):
        tab = person.new_page()
        return tab, PageWatch(tab, app_url)

    def new_person(self, mode: str = "default", *, blocks_all_cookies: bool = False):
        """A new person's browser: a fresh context of the chromium for ``mode``; with
        ``blocks_all_cookies``, a chromium of its own whose profile refuses every cookie."""
        if not blocks_all_cookies:
            person = self._launcher(MODES[mode]).new_context(viewport=VIEWPORT)
        else:
            profile = self._tmp_path / f"profile-{len(self._contexts)}"
            (profile / "Default").mkdir(parents=True)
            (profile / "Default" / "Preferences").write_text(json.dumps(BLOCK_ALL_COOKIES))
            person = self._launcher.playwright.chromium.launch_persistent_context(
                str(profile), executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *MODES[mode]],
                viewport=VIEWPORT)
        person.set_default_timeout(TIMEOUT_MS)
        self._contexts.append(person)
        return person

    def framed(self, site: ParentSite, app, app_url: str, person) -> WatchedChat:
        """``person`` opens the parent site, which frames the app."""
        tab, watch = self._tab(person, app_url)
        tab.goto(site.frame(app_url))
        self._chats.append(WatchedChat.in_frame(tab, app, app_url, watch))
        return self._chats[-1]

    def top_level(self, app, app_url: str, person) -> WatchedChat:
        tab, watch = self._tab(person, app_url)
        self._chats.append(WatchedChat.top_level(tab, app, app_url, watch))
        return self._chats[-1]

    def close(self, stem: str) -> None:
        tabs = []
        for chat in self._chats:
            if chat.tab not in tabs:
                tabs.append(chat.tab)
        for n, tab in enumerate(tabs, start=1):
            try:
                if not tab.is_closed():
                    RESULTS.mkdir(parents=True, exist_ok=True)
                    tab.screenshot(path=str(RESULTS / (f"{stem}.png" if n == 1 else f"{stem}-{n}.png")),
                                   full_page=True)
            except Exception:  # a screenshot must never hide the test's own result
                pass
        for context in self._contexts:
            context.close()


@pytest.fixture
def people(chromium_launcher, tmp_path, request) -> Iterator[People]:
    crowd = People(chromium_launcher, tmp_path)
    yield crowd
    crowd.close(file_stem(request.node.name))


def reload_tab(chat: WatchedChat) -> WatchedChat:
    """Reload the person's tab - for a framed app, the parent page - and attach to the app again."""
    chat.tab.reload()
    if chat.page is chat.tab:  # top-level
        chat.wait_ready()
        return chat
    return WatchedChat.in_frame(chat.tab, chat.app, chat.base_url, chat.watch)


# 1, 2, 4 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", list(MODES))
def test_framed_on_another_site_chats_remembers_and_keeps_people_apart(mode, launch_app, parent_site, people):
    app, url = launch_app()
    site = parent_site()
    alice = people.framed(site, app, url, people.new_person(mode))
    name = canary("Zed")

    assert alice.ask(f"My name is {name}").startswith(f"Nice to meet you, {name}!")
    alice.assert_healthy("after the first message")
    assert alice.ask("Add 2 apples to my cart").startswith("Added 2 × Apples")
    assert alice.ask("What's my name?") == f"Your name is {name}."
    alice.assert_healthy("after three turns")
    # The frame keeps a cookie, so there is no "cookies are blocked" notice...
    expect(alice.page.locator(COOKIE_NOTICE)).to_be_hidden()
    # ...and it is the partitioned (CHIPS) owner cookie: the only kind a cross-site frame keeps.
    cookies = alice.owner_cookies()
    assert [c["name"] for c in cookies] == ["__Host-cmw_owner"], cookies
    cookie = cookies[0]
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "None", cookie
    assert cookie.get("partitionKey", site.site) == site.site, cookie  # keyed by the embedding site

    # Reload the embedding page: the frame comes back with this person's conversation (the frame has no
    # sessionStorage, so the app falls back to the owner's most recent conversation).
    alice = reload_tab(alice)
    expect(alice.user_messages).to_have_count(3)
    assert alice.user_texts() == [f"My name is {name}", "Add 2 apples to my cart", "What's my name?"]
    assert alice.ask("What's my name?") == f"Your name is {name}."
    assert "2 × Apples" in alice.ask("Show my cart")
    alice.assert_healthy("after reloading the parent page")

    if mode == "default":  # the README picture: the app inside another site's page
        picture = RESULTS / "embedded.png"
        alice.screenshot(picture)
        docs_picture = ROOT / "docs" / "embedded.png"
        if not docs_picture.exists() or os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
            docs_picture.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(picture, docs_picture)

    # Another person frames the same app on the same site: none of Alice's conversation reaches them.
    bob = people.framed(site, app, url, people.new_person(mode))
    bob.watch_for([name, "Apples"])  # "Apples" as the cart shows it (the banner says "apples")
    expect(bob.user_messages).to_have_count(0)
    answer = bob.ask("What's my name?")
    assert DONT_KNOW in answer and name not in answer
    assert "empty" in bob.ask("Show my cart").lower()
    assert bob.user_texts() == ["What's my name?", "Show my cart"]
    html = bob.page.content()
    assert name not in html and "Apples" not in html
    assert bob.leaks() == [], "Alice's data appeared in Bob's frame"
    bob.assert_healthy()
    assert bob.owner_cookies()[0]["value"] != cookie["value"]

    # ...and Alice's frame still has her conversation.
    assert alice.ask("What's my name?") == f"Your name is {name}."
    alice.assert_healthy()


# 5 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["framed", "top-level"])
def test_a_browser_that_keeps_no_cookie_is_told_and_still_chats_in_its_tab(where, launch_app, parent_site, people):
    app, url = launch_app()
    site = parent_site()
    person = people.new_person(blocks_all_cookies=True)
    chat = (people.framed(site, app, url, person) if where == "framed" else people.top_level(app, url, person))
    name = canary("Zed")

    notice = chat.page.locator(COOKIE_NOTICE)
    expect(notice).to_be_visible()
    text = notice.inner_text().strip()
    assert "cookie" in text.lower() and text.rstrip(".").count(". ") == 0, f"not one sentence: {text!r}"
    # The tab chats with a tab-only session: it remembers within the tab, and nothing went wrong.
    assert chat.ask(f"My name is {name}").startswith(f"Nice to meet you, {name}!")
    assert chat.ask("Add 2 apples to my cart").startswith("Added 2 × Apples")
    assert chat.ask("What's my name?") == f"Your name is {name}."
    assert "2 × Apples" in chat.ask("Show my cart")
    chat.assert_healthy()
    assert chat.context.cookies() == [], "the browser was meant to keep no cookie"
    # As the notice says, the chat lives only in this tab: a reload starts an empty one, still usable.
    chat = reload_tab(chat)
    expect(chat.page.locator(COOKIE_NOTICE)).to_be_visible()
    expect(chat.user_messages).to_have_count(0)
    answer = chat.ask("What's my name?")
    assert DONT_KNOW in answer and name not in answer
    chat.assert_healthy("after a reload")

    # Another person in the same situation shares nothing with this tab (no cookie means no owner in
    # common; the tab-only owner comes from each tab's own session).
    other = (people.framed(site, app, url, people.new_person(blocks_all_cookies=True)) if where == "framed"
             else people.top_level(app, url, people.new_person(blocks_all_cookies=True)))
    other.watch_for([name])
    assert DONT_KNOW in other.ask("What's my name?")
    assert "empty" in other.ask("Show my cart").lower()
    assert other.leaks() == [] and name not in other.page.content()
    other.assert_healthy()


# 6 ------------------------------------------------------------------------------------------------
FETCH_JS = """async ([target, method]) => {
  const init = method === 'GET' ? {credentials: 'include'}
    : {method, credentials: 'include', mode: 'no-cors', headers: {'Content-Type': 'text/plain'},
       body: JSON.stringify({data: ['Show my cart'], fn_index: 0, session_hash: 'stolen00000'})};
  try { await fetch(target, init); } catch (e) { /* CORS hides the answer; the status is read below */ }
}"""


def status_of_fetch_from(tab, target: str, method: str) -> int:
    """The HTTP status the app answered to a ``fetch`` by ``tab``'s page (whatever CORS lets it read)."""
    with tab.expect_response(lambda r: r.url == target and r.request.method == method) as response:
        tab.evaluate(FETCH_JS, [target, method])
    return response.value.status


@pytest.mark.parametrize("allowed", [False, True], ids=["unlisted-site", "allowed-site"])
def test_the_embedding_page_cannot_call_the_api_unless_allowed(allowed, launch_app, parent_site, people):
    """The embedding page's own script shares the frame's partitioned cookie (same top-level site), so
    only the app's guard stops it from acting as the person: it must, unless the operator listed it."""
    site = parent_site()
    app, url = launch_app(allowed_origins=frozenset({site.origin}) if allowed else frozenset())
    chat = people.framed(site, app, url, people.new_person())
    assert chat.ask("Add 2 apples to my cart").startswith("Added 2 × Apples")  # the frame works...
    chat.assert_healthy()  # ...its own requests are same-origin, never refused

    info, join = url + "gradio_api/info", url + "gradio_api/queue/join"
    get_status = status_of_fetch_from(chat.tab, info, "GET")
    post_status = status_of_fetch_from(chat.tab, join, "POST")
    if allowed:
        assert get_status == 200, f"an allowed site's GET {info} got {get_status}"
        assert post_status != 403, f"an allowed site's POST {join} got 403"
    else:
        assert (get_status, post_status) == (403, 403), f"another site's page got {get_status}/{post_status}"
    # Whatever the embedding page did, the person's frame still works.
    assert "2 × Apples" in chat.ask("Show my cart")
    chat.assert_no_error()
