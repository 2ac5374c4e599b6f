"""GET /healthz and X-Cmw-Worker (deploy/health.py), in the real app: answered outside the HTTP guard."""

from __future__ import annotations

import httpx


def test_healthz_answers_without_a_cookie_or_a_worker_name(launch_app):
    app, url = launch_app()
    for client_headers in ({}, {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}):
        response = httpx.get(url + "healthz", headers=client_headers)
        assert response.status_code == 200 and response.json() == {"ok": True}
        assert "set-cookie" not in response.headers  # the guard never saw it: nothing minted
        assert "x-cmw-worker" not in response.headers  # one process: no worker to name
    head = httpx.head(url + "healthz")
    assert head.status_code == 200 and head.content == b""
    assert len(app.registry) == 0
    page = httpx.get(url)  # everything else still goes through the guard
    assert page.status_code == 200 and "cmw_owner=" in page.headers["set-cookie"]


def test_every_response_names_the_worker_when_it_has_an_id(launch_app):
    _, url = launch_app(worker_id="7")
    for path in ("healthz", "", "config", "gradio_api/info", "no-such-page"):
        assert httpx.get(url + path).headers.get("x-cmw-worker") == "7", path
    refused = httpx.post(url + "gradio_api/queue/join", json={"session_hash": "x"},
                         headers={"Sec-Fetch-Site": "cross-site"})
    assert refused.status_code == 403 and refused.headers.get("x-cmw-worker") == "7"  # the guard's own answers too


def test_a_post_to_healthz_is_not_the_health_check(launch_app):
    _, url = launch_app()
    assert httpx.post(url + "healthz").status_code in (404, 405)
