"""People's own files over the real HTTP API: /upload, the file tools behind /chat, the guard on Gradio's
upload cache, limits, delete-all, export and restart."""

from __future__ import annotations

import asyncio
import io
import threading
import zipfile
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

from gradio_compat import normal_path, upload_folder

ORDERS_A = "order,item,amount\n1,apples,10\n2,pears,32\n3,canary-alpha-7731,5\n"
ORDERS_B = "order,item,amount\n1,plums,1000\n2,canary-bravo-4420,2000\n"


def _file(tmp_path: Path, name: str, content: bytes | str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def _counts(app, owner_of_client) -> tuple[int, int]:
    return _on_app_loop(app, app.manager.files.counts(owner_of_client))


def _on_app_loop(app, coroutine):
    from gradio_compat import server_loop

    return asyncio.run_coroutine_threadsafe(coroutine, server_loop(app.demo)).result(timeout=30)


def _principal(app, client: Client) -> str:
    session = app.registry.peek(client.session_hash)
    assert session is not None and session.principal
    return session.principal


def _cache_files() -> set[str]:
    root = Path(upload_folder())
    return {str(p) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def test_two_people_upload_at_once_and_each_sees_only_their_own(launch_app, tmp_path):
    app, url = launch_app()
    people = {"a": (Client(url, verbose=False), ORDERS_A, "canary-alpha-7731", "47"),
              "b": (Client(url, verbose=False), ORDERS_B, "canary-bravo-4420", "3,000")}
    answers: dict[str, dict[str, str]] = {}
    start = threading.Barrier(2)

    def person(key: str) -> None:
        client, content, canary, total = people[key]
        path = _file(tmp_path / key, "orders.csv", content)
        start.wait()
        got = {"upload": client.predict(handle_file(path), api_name="/upload")}
        for ask in ("What files do I have?", f"Search my files for {canary}", "Sum amount in orders.csv",
                    "How many rows are in orders.csv?", "Search my files for canary"):
            got[ask] = client.predict(ask, api_name="/chat")
        answers[key] = got

    threads = [threading.Thread(target=person, args=(key,)) for key in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    a, b = answers["a"], answers["b"]
    assert a["upload"].startswith("orders.csv (") and "3 rows × 3 columns" in a["upload"]
    assert "2 rows × 3 columns" in b["upload"]
    assert "orders.csv" in a["What files do I have?"] and "orders.csv" in b["What files do I have?"]
    assert "canary-alpha-7731" in a["Search my files for canary-alpha-7731"]
    assert "canary-bravo-4420" in b["Search my files for canary-bravo-4420"]
    assert "47" in a["Sum amount in orders.csv"] and "3,000" in b["Sum amount in orders.csv"].replace("3000", "3,000")
    assert "3 rows" in a["How many rows are in orders.csv?"] and "2 rows" in b["How many rows are in orders.csv?"]
    for mine, theirs in ((a, "bravo"), (b, "alpha")):
        assert all(theirs not in answer for answer in mine.values()), mine
    # nothing of either upload is left in Gradio's cache
    assert not any(name.endswith("orders.csv") for name in _cache_files())


def test_another_persons_upload_cannot_be_fetched_or_used_even_with_its_exact_path(launch_app, tmp_path):
    app, url = launch_app()
    owner, stranger = httpx.Client(base_url=url, timeout=30), httpx.Client(base_url=url, timeout=30)
    owner.get("/config"), stranger.get("/config")  # each gets its own owner cookie
    uploaded = owner.post("/gradio_api/upload", files={"files": ("secret.csv", b"a,b\n1,canary-secret-99\n")})
    assert uploaded.status_code == 200
    path = uploaded.json()[0]
    assert Path(path).exists()

    for client in (stranger, owner):  # an upload is never served back, to anyone
        for route in (f"/gradio_api/file={path}", f"/gradio_api/file/{path}"):
            answer = client.get(route)
            assert answer.status_code == 404 and b"canary-secret-99" not in answer.content

    # The stranger names the exact path as the input of /upload (and of the page's attach event).
    config = stranger.get("/config").json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "upload")
    join = stranger.post("/gradio_api/queue/join", json={
        "data": [{"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": "secret.csv"}],
        "fn_index": fn_index, "session_hash": "strangersess1", "event_data": None, "trigger_id": None})
    assert join.status_code == 403 and "not uploaded by you" in join.json()["detail"]

    # A caller without any cookie cannot upload at all.
    anonymous = httpx.post(url + "gradio_api/upload", files={"files": ("x.csv", b"a\n1\n")},
                           headers={"sec-fetch-site": "same-origin"})
    assert anonymous.status_code == 403
    assert Path(path).exists()  # the owner can still attach it
    for client in (owner, stranger):
        client.close()


@pytest.mark.parametrize("name, content, expected", [
    ("empty.csv", b"", "empty"),
    ("binary.csv", bytes(range(256)) * 40, "not a text file"),
    ("bomb.csv", None, "archive"),
    ("wide.csv", ",".join(f"c{i}" for i in range(10_000)) + "\n" + ",".join("1" * 10_000) + "\n", "columns"),
    ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer <<>>\n%%EOF", "PDF"),
    ("notes.exe.txt", b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00", "not a text file"),
])
def test_a_bad_file_gets_a_clear_answer_and_leaves_nothing(launch_app, tmp_path, name, content, expected):
    app, url = launch_app()
    if content is None:  # a zip bomb: 50 MB of zeros in a few KB, named .csv
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bomb:
            bomb.writestr("data.csv", b"0" * 50_000_000)
        content = buffer.getvalue()
    client = Client(url, verbose=False)
    client.predict("My name is Careful", api_name="/chat")
    answer = client.predict(handle_file(_file(tmp_path, name, content)), api_name="/upload")
    assert answer.startswith("Not attached:") and expected.lower() in answer.lower(), answer
    assert _counts(app, _principal(app, client)) == (0, 0)
    assert client.predict("What files do I have?", api_name="/chat").startswith("You have no files")
    assert not any(Path(p).name == name for p in _cache_files())


def test_a_file_over_the_size_limit_is_refused_before_it_is_kept(launch_app, tmp_path):
    app, url = launch_app(max_upload_mb=1)
    client = Client(url, verbose=False)
    big = _file(tmp_path, "big.csv", "a,b\n" + "1,2\n" * 400_000)  # 1.6 MB
    with pytest.raises(Exception, match="maximum file size|exceeds"):  # gradio_client checks the limit first
        client.predict(handle_file(big), api_name="/upload")
    raw = httpx.Client(base_url=url, timeout=60)
    raw.get("/config")
    answer = raw.post("/gradio_api/upload", files={"files": ("big.csv", Path(big).read_bytes())})
    assert answer.status_code == 413 and "maximum allowed size" in answer.text
    assert not any(Path(p).name == "big.csv" for p in _cache_files())


def test_storage_quota_and_per_conversation_count_are_enforced_with_a_sentence(launch_app, tmp_path):
    app, url = launch_app(max_storage_mb=0.05, max_files_per_conversation=2)
    client = Client(url, verbose=False)
    first = client.predict(handle_file(_file(tmp_path, "one.txt", "x" * 30_000)), api_name="/upload")
    assert first.startswith("one.txt (")
    over = client.predict(handle_file(_file(tmp_path, "two.txt", "y" * 30_000)), api_name="/upload")
    assert over.startswith("Not attached:") and "the limit is" in over
    client.predict(handle_file(_file(tmp_path, "small.md", "# small\n")), api_name="/upload")
    third = client.predict(handle_file(_file(tmp_path, "tiny.json", "{\"a\": 1}")), api_name="/upload")
    assert third.startswith("Not attached:") and "2" in third
    assert _counts(app, _principal(app, client))[0] == 2


def test_delete_all_export_and_restart(launch_app, tmp_path, make_settings):
    app, url = launch_app()
    client = Client(url, verbose=False)
    client.predict(handle_file(_file(tmp_path, "orders.csv", ORDERS_A)), api_name="/upload")
    client.predict(handle_file(_file(tmp_path, "notes.md", "# Notes\nthe canary-notes-55 line\n")), api_name="/upload")
    principal = _principal(app, client)
    files, rows = _counts(app, principal)
    assert files == 2 and rows >= 4

    # export: the transcript names each file, the archive holds the originals byte for byte
    from tests_support import handler_request
    from ui.edge import SessionEdge
    from ui.privacy import PrivacyHandlers

    privacy = PrivacyHandlers(SessionEdge(app.registry, app.credentials), app.manager, app.settings)
    request = handler_request(client.session_hash, app.registry.bindings.owner_of(client.session_hash))
    paths, folder = _on_app_loop(app, privacy.export(request))
    archive = next(p for p in paths if p.endswith(".zip"))
    with zipfile.ZipFile(archive) as bundle:
        originals = {Path(n).name: bundle.read(n) for n in bundle.namelist()}
    assert originals["orders.csv"] == ORDERS_A.encode() and b"canary-notes-55" in originals["notes.md"]
    assert "notes.md" in Path(next(p for p in paths if p.endswith(".json"))).read_text()
    privacy.forget_export(folder)

    # restart: a new process on the same data directory, the same cookie
    cookies = dict(client.cookies)
    app.close()
    app2, url2 = launch_app()
    again = Client(url2, verbose=False, httpx_kwargs={"cookies": cookies})
    conversation = again.predict(api_name="/conversations")[0]["id"]
    again.predict(conversation, api_name="/resume")
    listed = again.predict("What files do I have?", api_name="/chat")
    assert "orders.csv" in listed and "notes.md" in listed
    assert "canary-notes-55" in again.predict("Search my files for canary-notes-55", api_name="/chat")

    deleted = again.predict(api_name="/delete_all")
    assert deleted.startswith("All your data was deleted")
    assert _counts(app2, principal) == (0, 0)
    assert _on_app_loop(app2, app2.manager.files.usage(principal)) == 0
