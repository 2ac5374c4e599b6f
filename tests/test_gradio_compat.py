"""Each assumption ``gradio_compat.py`` makes about Gradio's internals, checked against the installed Gradio.

A Gradio upgrade that adds a route, moves a session_hash or renames an internal fails here first, with
the difference spelled out, before it can open a hole in the HTTP guard.
"""

from __future__ import annotations

import asyncio

import gradio as gr

import gradio_compat
from gradio_compat import (BODY_ROUTES, api_route, created_event, named_events, named_sessions, queue_max_size,
                           server_loop)

# Every /gradio_api route of Gradio 6.31 as this app launches it (run_history off), and where it names a
# session, if it does.
SESSION_IN_PATH = {("GET", "/gradio_api/heartbeat/{session_hash}"),
                   ("GET", "/gradio_api/stream/{session_hash}/{run}/{component_id}/playlist.m3u8"),
                   ("GET", "/gradio_api/stream/{session_hash}/{run}/{component_id}/{segment_id}.{ext}"),
                   ("GET", "/gradio_api/stream/{session_hash}/{run}/{component_id}/playlist-file")}
SESSION_IN_QUERY = {("GET", "/gradio_api/queue/data")}
SESSION_IN_BODY = {("POST", f"/gradio_api/{route}") for route in (
    "queue/join", "cancel", "component_server", "component_server/", "api/{api_name}", "api/{api_name}/",
    "run/{api_name}", "run/{api_name}/", "call/{api_name}", "call/{api_name}/", "call/v2/{api_name}",
    "call/v2/{api_name}/")}
EVENT_ID_IN_PATH = {("GET", "/gradio_api/call/{api_name}/{event_id}"),
                    ("GET", "/gradio_api/call/v2/{api_name}/{event_id}"),
                    ("POST", "/gradio_api/stream/{event_id}"), ("POST", "/gradio_api/stream/{event_id}/close")}
NO_SESSION = {(m, f"/gradio_api/{p}") for m, p in (
    ("GET", "token"), ("GET", "token/"), ("GET", "app_id"), ("GET", "app_id/"), ("GET", "dev/reload"),
    ("GET", "runs"), ("GET", "runs/"), ("GET", "user"), ("GET", "user/"), ("GET", "login_check"),
    ("GET", "login_check/"),
    ("GET", "info"), ("GET", "info/"), ("GET", "openapi.json"),
    ("GET", "custom_component/{id}/{environment}/{type}/{file_name}"), ("GET", "proxy={url_path:path}"),
    ("HEAD", "proxy={url_path:path}"), ("GET", "file={path_or_url:path}"), ("HEAD", "file={path_or_url:path}"),
    ("GET", "file/{path:path}"), ("POST", "reset"), ("POST", "reset/"), ("GET", "queue/status"),
    ("GET", "upload_progress"), ("POST", "upload"), ("GET", "startup-events"), ("GET", "theme.css"),
    ("POST", "process_recording"), ("POST", "vibe-edit"), ("POST", "vibe-edit/"), ("POST", "undo-vibe-edit"),
    ("POST", "undo-vibe-edit/"), ("GET", "vibe-code"), ("GET", "vibe-code/"), ("POST", "vibe-code"),
    ("POST", "vibe-code/"), ("POST", "vibe-starter-queries"), ("POST", "vibe-starter-queries/"),
    ("GET", "deep_link"))}


def _gradio_api_routes(app) -> set[tuple[str, str]]:
    found = set()

    def walk(routes):
        for route in routes:
            inner = getattr(route, "original_router", None)  # FastAPI include_router()
            if inner is not None and inner is not route:
                walk(inner.routes)
            path = getattr(route, "path", "")
            if path.startswith("/gradio_api/"):
                found.update((method, path) for method in getattr(route, "methods", ()) or ())

    walk(app.routes)
    return found


def test_the_installed_gradio_is_the_pinned_one():
    assert gr.__version__ == gradio_compat.GRADIO_VERSION


def test_every_gradio_api_route_is_known_and_classified(launch_app):
    app, _ = launch_app()
    routes = _gradio_api_routes(app.demo.app)
    known = SESSION_IN_PATH | SESSION_IN_QUERY | SESSION_IN_BODY | EVENT_ID_IN_PATH | NO_SESSION
    assert routes - known == set(), "new Gradio routes: decide whether they name a session (gradio_compat.py)"
    assert known - routes == set(), "Gradio routes gone or moved: update gradio_compat.py and these sets"


def test_named_sessions_finds_the_hash_wherever_a_route_carries_it():
    def scope(method, query=b""):
        return {"method": method, "query_string": query}

    for method, path in SESSION_IN_PATH:
        concrete = path.replace("{session_hash}", "HASH").replace("{", "").replace("}", "")
        assert ("HASH", True) in named_sessions(scope(method), api_route(concrete), b""), path
    assert named_sessions(scope("GET", b"session_hash=HASH"), "queue/data", b"") == [("HASH", True)]
    for method, path in SESSION_IN_BODY:
        route = api_route(path.replace("{api_name}", "chat"))
        assert route.startswith(BODY_ROUTES), path
        assert named_sessions(scope(method), route, b'{"session_hash": "HASH"}') == [("HASH", True)]

def test_named_events_finds_the_event_id_wherever_a_route_carries_it():
    def scope(method):
        return {"method": method, "query_string": b""}

    for method, path in EVENT_ID_IN_PATH:
        route = api_route(path.replace("{api_name}", "chat").replace("{event_id}", "EVENT"))
        assert named_events(scope(method), route, b"") == ["EVENT"], path
    for route in ("cancel", "reset"):
        assert named_events(scope("POST"), route, b'{"event_id": "EVENT", "session_hash": "H"}') == ["EVENT"]
        assert named_events(scope("POST"), route, b"{}") == [""]  # no id: matches no event, refused
    assert named_events(scope("GET"), "call/chat/EVENT", b"") == ["EVENT"]
    # GET call/<api>/<id> once fell back to a session named like the id: it names no session now
    assert named_sessions(scope("GET"), "call/chat/EVENT", b"") == []
    assert created_event("queue/join", "POST", b'{"event_id": "E1"}') == "E1"
    assert created_event("call/chat", "POST", b'{"event_id": "E2"}') == "E2"
    assert created_event("queue/data", "GET", b'{"event_id": "E3"}') is None


def test_server_loop_and_queue_bound_are_reachable(launch_app):
    app, _ = launch_app(queue_max=7)
    loop = server_loop(app.demo)
    assert isinstance(loop, asyncio.AbstractEventLoop) and loop.is_running()
    assert queue_max_size(app.demo) == app.settings.gradio_event_limit


def test_upload_answers_paths_and_events_name_them_as_file_data(launch_app, tmp_path):
    """``POST upload`` answers a JSON list of cache paths; an event names one as FileData in its body; the
    file routes take the path after ``file=`` or ``file/``. The guard reads all three (gradio_compat)."""
    import httpx

    from gradio_compat import file_paths_in, normal_path, served_file, upload_folder, uploaded_paths

    app, url = launch_app()
    with httpx.Client(base_url=url, timeout=30) as http:
        http.get("/config")
        answer = http.post("/gradio_api/upload", files={"files": ("a.csv", b"x,y\n1,2\n")})
    assert answer.status_code == 200
    paths = uploaded_paths("upload", "POST", answer.content)
    assert len(paths) == 1 and paths[0].startswith(upload_folder()) and paths[0].endswith("a.csv")
    assert uploaded_paths("upload", "GET", answer.content) == [] and uploaded_paths("upload", "POST", b"{}") == []
    body = ('{"data": [[{"path": "%s", "meta": {"_type": "gradio.FileData"}}], "text"], "fn_index": 3}'
            % paths[0]).encode()
    assert file_paths_in(body) == paths and file_paths_in(b'{"data": ["no files"]}') == []
    assert served_file(f"file={paths[0]}") == served_file(f"file/{paths[0]}") == paths[0]
    assert served_file("file=/tmp/../tmp/gradio/x") == normal_path("/tmp/gradio/x") and served_file("info") is None


def test_a_new_session_builds_component_configs_only_when_they_are_read(launch_app, monkeypatch):
    """gradio_compat.build_session_config_on_demand: a new session_hash no longer builds every component's
    config (13% of the app's CPU under load); whoever reads them all gets exactly what Gradio's own
    SessionState gives, also after values changed."""
    from gradio import state_holder
    from gradio.blocks import BlocksConfig

    app, _ = launch_app()
    on_demand = state_holder.SessionState
    assert getattr(on_demand, "_cmw_config_on_demand", False), "build_app installs it"
    eager = on_demand.__mro__[1]
    built = []
    original = BlocksConfig.config_for_block

    def counted(_id, *args, **kwargs):
        built.append(_id)
        return original(_id, *args, **kwargs)

    monkeypatch.setattr(BlocksConfig, "config_for_block", staticmethod(counted))

    lazy, reference = on_demand(app.demo), eager(app.demo)
    assert len(built) == len(list(reference.components)) > 20  # Gradio's builds them all at once
    built.clear()
    lazy = on_demand(app.demo)
    assert built == []
    textbox = next(b for b in app.demo.blocks.values() if isinstance(b, gr.Textbox))
    for state in (lazy, reference):
        state._update_value_in_config(textbox._id, "typed")
    assert built == [textbox._id] and textbox._id in lazy.config_values  # the eager one had it
    assert list(lazy.components) == list(reference.components)
    assert lazy.config_values[textbox._id]["props"]["value"] == "typed"
