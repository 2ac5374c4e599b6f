"""The owner cookie where people meet the app - framed on other sites - and the holes a page could use.

Two layers: the guard alone around a recording ASGI app (which cookie, which caller, what is refused),
and the real app attacked the way a sibling-subdomain page or a cross-site form would. Each attack
here succeeded against the app before the guard checked Origin / Sec-Fetch-Site and parsed cookies
itself.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from gradio_client import Client

from memory.registry import SessionRegistry
from security.caller import SCOPE_KEY, may_use
from security.cookie_mode import COOKIE_NAME, PARTITIONED_COOKIE_NAME
from security.cookies import MAX_COOKIE_HEADER_BYTES, CookieHeaderTooLarge, cookie_pairs
from security.http_guard import CROSS_SITE, DUPLICATE_COOKIES, OwnerGuard
from security.owner import OwnerCredentials

BROWSER_SAME_ORIGIN = {"sec-fetch-site": "same-origin", "sec-fetch-mode": "cors", "sec-fetch-dest": "empty"}
NAVIGATION = {"sec-fetch-mode": "navigate", "sec-fetch-dest": "document"}
FRAME_NAVIGATION = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "iframe"}


class BoundOnly:
    """A registry entry with just the binding: what the guard needs of a session."""

    def __init__(self, owner):
        self.owner, self.username = owner, None

    def may_be_used_by(self, owner, username):
        return may_use(self.owner, self.username, owner, username)

    def release(self):
        pass


class Recorder:
    """The app behind the guard: answers 200 and remembers the caller the guard resolved."""

    def __init__(self):
        self.callers = []

    async def __call__(self, scope, receive, send):
        self.callers.append(scope.get("state", {}).get(SCOPE_KEY))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def guarded():
    credentials = OwnerCredentials(b"k" * 32)
    registry = SessionRegistry(lambda fingerprint, owner: BoundOnly(owner),
                               maxsize=100, ttl=60, fingerprint=credentials.fingerprint)
    recorder = Recorder()
    guard = OwnerGuard(recorder, credentials=credentials, registry=registry,
                       allowed_origins=frozenset({"https://partner.example"}))

    def call(method: str, path: str, *, host: str = "127.0.0.1:7860", headers: dict | None = None,
             cookies: list[tuple[str, str]] = (), json=None, scheme: str = "http") -> httpx.Response:
        all_headers = {"host": host, **(headers or {})}
        if cookies:
            all_headers["cookie"] = "; ".join(f"{n}={v}" for n, v in cookies)
        transport = httpx.ASGITransport(app=guard)

        async def go():
            async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://{host}") as client:
                return await client.request(method, path, headers=all_headers, json=json)

        return asyncio.run(go())

    return call, credentials, registry, recorder


def join_body(session_hash: str) -> dict:
    return {"data": ["hi"], "fn_index": 0, "trigger_id": None, "session_hash": session_hash, "event_data": None}


# -- which cookie ----------------------------------------------------------------------------------
def test_browser_on_loopback_gets_a_partitioned_host_prefixed_cookie(guarded):
    call, *_ = guarded
    header = call("GET", "/", headers={"sec-fetch-site": "none", **NAVIGATION}).headers["set-cookie"]
    assert header.startswith(f"{PARTITIONED_COOKIE_NAME}=")
    for attribute in ("Path=/", "HttpOnly", "Secure", "SameSite=None", "Partitioned"):
        assert attribute in header
    assert "Domain" not in header


def test_a_framed_first_visit_gets_the_partitioned_cookie(guarded):
    call, *_ = guarded
    header = call("GET", "/", headers=FRAME_NAVIGATION).headers["set-cookie"]
    assert header.startswith(f"{PARTITIONED_COOKIE_NAME}=") and "Partitioned" in header


@pytest.mark.parametrize("how", ["x-forwarded-proto", "https", "space"])
def test_https_behind_a_proxy_or_on_a_space_is_detected_without_settings(guarded, monkeypatch, how):
    call, *_ = guarded
    headers, scheme = {}, "http"
    if how == "x-forwarded-proto":
        headers = {"x-forwarded-proto": "https"}
    elif how == "https":
        scheme = "https"
    else:
        monkeypatch.setenv("SPACE_ID", "someone/cmw-agent")
    header = call("GET", "/", host="chat.example.com", headers=headers, scheme=scheme).headers["set-cookie"]
    assert header.startswith(f"{PARTITIONED_COOKIE_NAME}=") and "Secure" in header


def test_plain_http_elsewhere_and_non_browsers_on_http_get_a_first_party_cookie(guarded):
    call, *_ = guarded
    lan = call("GET", "/", host="192.168.1.20:7860", headers={"sec-fetch-site": "none", **NAVIGATION})
    client = call("GET", "/config")  # gradio_client: no Sec-Fetch-*; its cookie jar never returns Secure over http
    for response in (lan, client):
        header = response.headers["set-cookie"]
        assert header.startswith(f"{COOKIE_NAME}=") and "SameSite=Lax" in header and "Secure" not in header


# -- cookie tossing, duplicates, parsing -----------------------------------------------------------
def test_a_tossed_plain_cookie_is_ignored_where_the_host_prefixed_one_is_used(guarded):
    call, credentials, _, recorder = guarded
    victim, attacker = credentials.mint(), credentials.mint()
    # The sibling subdomain set cmw_owner for the parent domain; it arrives after the victim's cookie.
    call("GET", "/gradio_api/info", headers=BROWSER_SAME_ORIGIN,
         cookies=[(PARTITIONED_COOKIE_NAME, victim), (COOKIE_NAME, attacker)])
    assert recorder.callers[-1].owner == credentials.owner_of(victim)
    call("GET", "/gradio_api/info", headers=BROWSER_SAME_ORIGIN, cookies=[(COOKIE_NAME, attacker)])
    assert recorder.callers[-1].owner is None  # the tossed cookie alone is nobody


def test_two_owner_cookies_are_refused_with_a_message(guarded):
    call, credentials, _, recorder = guarded
    mine, tossed = credentials.mint(), credentials.mint()
    for cookies, headers in ([(COOKIE_NAME, mine), (COOKIE_NAME, tossed)], {}),  \
                            ([(PARTITIONED_COOKIE_NAME, mine), (PARTITIONED_COOKIE_NAME, tossed)], BROWSER_SAME_ORIGIN):
        response = call("POST", "/gradio_api/queue/join", cookies=cookies, headers=headers, json=join_body("tab"))
        assert response.status_code == 400
        assert response.content == DUPLICATE_COOKIES and b"Clear this site" in response.content
        assert "set-cookie" not in response.headers
    assert recorder.callers == []


def test_cookie_parser_is_linear_and_bounded():
    token = "abc.def"
    pairs = cookie_pairs([(b"cookie", f'a="x\\\\"; {COOKIE_NAME}={token}; b=c=d; junk'.encode())])
    assert (COOKIE_NAME, token) in pairs and ("b", "c=d") in pairs
    pathological = b'a="' + b"\\" * (MAX_COOKIE_HEADER_BYTES + 10) + b'"'
    with pytest.raises(CookieHeaderTooLarge):
        cookie_pairs([(b"cookie", pathological)])


def test_a_pathological_cookie_header_is_refused_not_parsed(guarded):
    call, _, _, recorder = guarded
    response = call("GET", "/", headers={"cookie": 'a="' + "\\" * 15_000 + '"'})
    assert response.status_code == 431 and b"cookies" in response.content
    assert recorder.callers == []


# -- cross-site reads and writes -------------------------------------------------------------------
@pytest.mark.parametrize("headers", [
    {"sec-fetch-site": "same-site", "origin": "http://evil.example.com"},  # a sibling subdomain's page
    {"sec-fetch-site": "cross-site", "origin": "https://evil.test"},
    {"origin": "https://evil.test"},  # a browser that sends no Sec-Fetch-* headers
    {"sec-fetch-site": "cross-site"},  # a form POST carries no Origin in some browsers
])
def test_cross_site_requests_to_the_api_are_refused(guarded, headers):
    call, credentials, registry, recorder = guarded
    victim = credentials.mint()
    for method, path, body in (("POST", "/gradio_api/queue/join", join_body("victim-tab")),
                               ("GET", "/gradio_api/queue/data?session_hash=victim-tab", None),
                               ("POST", "/login", None)):
        response = call(method, path, host="chat.example.com", headers=headers,
                        cookies=[(COOKIE_NAME, victim)], json=body)
        assert response.status_code == 403 and response.content == CROSS_SITE
        assert "set-cookie" not in response.headers  # never minted or replaced
    assert recorder.callers == [] and registry.bindings.owner_of("victim-tab") is None


def test_same_origin_frames_allowed_partners_and_non_browsers_pass(guarded):
    call, credentials, _, recorder = guarded
    token = credentials.mint()
    same_origin = {"sec-fetch-site": "same-origin", "origin": "https://chat.example.com"}
    partner = {"sec-fetch-site": "cross-site", "origin": "https://partner.example"}
    for headers in (same_origin, partner, {}):
        response = call("POST", "/gradio_api/queue/join", host="chat.example.com", headers=headers,
                        cookies=[(COOKIE_NAME, token), (PARTITIONED_COOKIE_NAME, token)],
                        json=join_body(f"tab-{len(recorder.callers)}"), scheme="https")
        assert response.status_code == 200, headers
    assert {c.owner for c in recorder.callers} == {credentials.owner_of(token)}


def test_the_frame_itself_may_load_cross_site(guarded):
    call, *_ = guarded
    assert call("GET", "/", host="chat.example.com", headers=FRAME_NAVIGATION).status_code == 200


def test_no_cookie_is_minted_on_cross_site_subrequests(guarded):
    call, *_ = guarded
    subrequest = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "image"}
    assert "set-cookie" not in call("GET", "/favicon.ico", headers=subrequest).headers
    # First-party mode (plain http, LAN): a framed navigation could overwrite the top-level cookie.
    assert "set-cookie" not in call("GET", "/", host="192.168.1.20:7860", headers=FRAME_NAVIGATION).headers


# -- a browser that keeps no cookie ----------------------------------------------------------------
def test_a_cookieless_browser_tab_gets_a_tab_only_session_and_cannot_take_a_bound_one(guarded):
    call, credentials, registry, recorder = guarded
    assert call("POST", "/gradio_api/queue/join", headers=BROWSER_SAME_ORIGIN, json=join_body("own-tab")).status_code == 200
    assert recorder.callers[-1].tab_only and recorder.callers[-1].owner == credentials.tab_owner("own-tab")
    assert call("GET", "/gradio_api/queue/data?session_hash=own-tab", headers=BROWSER_SAME_ORIGIN).status_code == 200

    token = credentials.mint()
    owned = call("POST", "/gradio_api/queue/join", headers=BROWSER_SAME_ORIGIN,
                 cookies=[(PARTITIONED_COOKIE_NAME, token)], json=join_body("cookie-tab"))
    assert owned.status_code == 200
    spoof = call("POST", "/gradio_api/queue/join", headers=BROWSER_SAME_ORIGIN, json=join_body("cookie-tab"))
    assert spoof.status_code == 403
    # ... and a cookie holder cannot take the tab-only session either
    steal = call("POST", "/gradio_api/queue/join", headers=BROWSER_SAME_ORIGIN,
                 cookies=[(PARTITIONED_COOKIE_NAME, token)], json=join_body("own-tab"))
    assert steal.status_code == 403
    assert registry.bindings.owner_of("cookie-tab") == credentials.owner_of(token)


# -- the real app, attacked from a sibling subdomain and by a cross-site form ----------------------
def _fn_index(url: str, api_name: str) -> int:
    config = httpx.get(url + "config").json()
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)


def test_a_sibling_subdomain_page_cannot_read_the_victims_conversations(launch_app):
    app, url = launch_app()
    victim = Client(url, verbose=False)
    name = f"Sibling{uuid.uuid4().hex[:8]}"
    victim.predict(f"My name is {name}", api_name="/chat")
    cookie = victim.cookies[COOKIE_NAME]
    # The victim's browser sends its Lax cookie on a same-site fetch from evil.example.com to chat.example.com.
    with httpx.Client(timeout=10, headers={"host": "chat.example.com", "origin": "http://evil.example.com",
                                           "sec-fetch-site": "same-site"}) as http:
        http.cookies.set(COOKIE_NAME, cookie)
        fresh = uuid.uuid4().hex[:11]
        join = http.post(url + "gradio_api/queue/join", json={
            "data": [], "fn_index": _fn_index(url, "conversations"), "trigger_id": None, "session_hash": fresh,
            "event_data": None})
        data = http.get(url + "gradio_api/queue/data", params={"session_hash": fresh})
    assert join.status_code == 403 and data.status_code == 403
    assert name not in join.text + data.text
    assert victim.predict("What's my name?", api_name="/chat") == f"Your name is {name}."


def test_a_cross_site_form_post_neither_runs_nor_replaces_the_cookie(launch_app):
    app, url = launch_app()
    victim = Client(url, verbose=False)
    victim.predict("My name is Formvictim", api_name="/chat")
    form = httpx.post(url + "gradio_api/queue/join", headers={"sec-fetch-site": "cross-site", "origin": "null",
                                                              "sec-fetch-mode": "navigate"},
                      json=join_body(victim.session_hash))  # a Lax cookie is not sent on a cross-site POST
    assert form.status_code == 403 and "set-cookie" not in form.headers
    assert victim.predict("What's my name?", api_name="/chat") == "Your name is Formvictim."


def test_an_invalid_cookie_or_a_lost_one_is_answered_with_what_to_do(guarded):
    call, credentials, _, recorder = guarded
    forged = call("POST", "/gradio_api/queue/join", cookies=[(COOKIE_NAME, "forged.token")], json=join_body("t1"))
    assert forged.status_code == 403 and "not valid on this server" in forged.json()["detail"]
    owner = credentials.mint()
    assert call("POST", "/gradio_api/queue/join", cookies=[(COOKIE_NAME, owner)], json=join_body("t2")).status_code == 200
    lost = call("POST", "/gradio_api/queue/join", cookies=[(COOKIE_NAME, credentials.mint())], json=join_body("t2"))
    assert lost.status_code == 403 and "-c jar -b jar" in lost.json()["detail"]
