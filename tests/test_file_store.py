"""Uploaded files in the store, on SQLite and (when TEST_DATABASE_URL is set) PostgreSQL: each owner sees
only their own files, limits and failures leave nothing, deletes leave zero rows, restarts keep files."""

from __future__ import annotations

import asyncio

import pytest

from agent.file_reader import FileRefused, read_upload
from memory.file_store import FileQuotaExceeded, FileStore, SearchHit
from memory.store import ConversationStore

MB = 1024 * 1024
LIMITS = {"max_owner_bytes": 50 * MB, "max_files_per_conversation": 20}
HOSTILE = ['"', '""', "'", "*", "canary*", "NEAR(a b)", "a NEAR/2 b", "(", ")", "a AND", "OR", "NOT x", "-",
           "^start", "col:umn", "text : x", "{owner}: x", "\x00", "\\", "%", "_", "?", "'; DROP TABLE cmw_files;--",
           "", "   ", "ü ß", "🙂", "a" * 5000, " ".join(["word"] * 500)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def make_store(request, tmp_path):
    """Factory: a ConversationStore on this test's backend (a new one on the same directory or schema each
    call, as after a restart) wrapped in a FileStore; every store made is closed after the test."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    made = []

    def make() -> FileStore:
        store = ConversationStore(data_dir=tmp_path / "data", database_url=url)
        made.append(store)
        return FileStore(store)

    try:
        yield make
    finally:
        for store in made:
            await store.close()


@pytest.fixture
def files(make_store) -> FileStore:
    return make_store()


def upload(name: str, text: str):
    data = text.encode()
    return read_upload(name, data, max_bytes=10 * MB), data


async def add(files: FileStore, owner: str, conversation: str, name: str, text: str, **limits):
    read, data = upload(name, text)
    return await files.add(owner, conversation, read, data, **{**LIMITS, **limits})


async def test_each_owner_sees_only_their_own_files(files):
    await asyncio.gather(
        add(files, "alice", "c1", "orders.csv", "item,amount\ncanary-alice,10\nshared,1\n"),
        add(files, "bob", "c2", "orders.csv", "item,amount\ncanary-bob,20\nshared,2\n"),
        add(files, "bob", "c1", "notes.txt", "bob wrote canary-bob-same-id in c1\nshared\n"))  # alice's id, bob's
    [a] = await files.list("alice", "c1")
    [b] = await files.list("bob", "c2")
    [b_same] = await files.list("bob", "c1")
    assert (a.owner, a.name, a.summary) == ("alice", "orders.csv", "2 rows × 2 columns")
    assert b_same.name == "notes.txt"
    assert await files.list("alice", "c2") == [] and await files.list("carol", "c1") == []

    assert await files.search("alice", "c1", "canary-alice") == [SearchHit("orders.csv", "row 1", "canary-alice, 10")]
    for owner, conversation in (("alice", "c1"), ("bob", "c2"), ("bob", "c1")):
        mine = {"alice": "canary-alice", "bob": "canary-bob"}[owner]
        hits = await files.search(owner, conversation, "shared")
        assert hits and all(h.file_name in {"orders.csv", "notes.txt"} for h in hits)
        everything = " ".join(h.text for h in hits + await files.search(owner, conversation, "canary"))
        assert mine in everything
        assert ("canary-alice" in everything) == (owner == "alice")
    assert await files.search("bob", "c1", "canary-alice") == []
    assert await files.search("alice", "c1", "canary-bob-same-id") == []

    assert (await files.find("alice", "c1", "ORDERS")).id == a.id
    assert await files.find("bob", "c1", "orders.csv") is None
    assert await files.content("alice", "c1", a.id) == b"item,amount\ncanary-alice,10\nshared,1\n"
    assert await files.content("bob", "c1", a.id) is None and await files.content("alice", "c2", a.id) is None
    assert [f.id for f in await files.all_for_owner("bob")] == sorted([b.id, b_same.id],
                                                                     key=lambda i: i != b_same.id)
    assert await files.usage("alice") == a.size and await files.counts("alice") == (1, 2)


async def test_find_by_exact_name_stem_or_unique_prefix(files):
    for name in ("orders-2024.csv", "orders-2025.csv", "notes.md"):
        await add(files, "alice", "c", name, "a,b\n1,2\n" if name.endswith(".csv") else "# hi\n")
    assert (await files.find("alice", "c", " Notes ")).name == "notes.md"
    assert (await files.find("alice", "c", "'orders-2025.CSV'")).name == "orders-2025.csv"
    assert (await files.find("alice", "c", "orders-2024")).name == "orders-2024.csv"
    assert await files.find("alice", "c", "orders") is None  # two files start with it: ambiguous
    assert await files.find("alice", "c", "") is None and await files.find("alice", "c", "zzz") is None
    assert [f.name for f in await files.list("alice", "c")] == ["orders-2024.csv", "orders-2025.csv", "notes.md"]


async def test_hostile_search_strings_never_raise(files):
    await add(files, "alice", "c", "notes.txt", 'plain words, "quoted" text, NEAR and (parens) * stars\n')
    for query in HOSTILE:
        hits = await files.search("alice", "c", query)
        assert isinstance(hits, list), query
    assert await files.search("alice", "c", "") == []
    assert [h.location for h in await files.search("alice", "c", '"quoted" (parens)')] == ["line 1"]
    assert len((await files.search("alice", "c", "NEAR"))) == 1


async def test_hits_are_trimmed_around_the_match(files):
    line = "filler " * 200 + "needle-canary " + "filler " * 200
    await add(files, "alice", "c", "long.txt", line)
    [hit] = await files.search("alice", "c", "needle-canary")
    assert "needle-canary" in hit.text and len(hit.text) <= 302 and hit.text.startswith("…")


async def test_quota_refusals_store_nothing(files):
    await add(files, "alice", "c", "first.txt", "x" * 600)
    before = (await files.counts("alice"), await files.usage("alice"))
    with pytest.raises(FileQuotaExceeded) as caught:
        await add(files, "alice", "other", "second.txt", "y\n" * 300, max_owner_bytes=1000)
    assert str(caught.value).startswith("second.txt (600 bytes) would bring your stored files to 1.2 KB")
    assert isinstance(caught.value, FileRefused)
    await add(files, "alice", "c", "two.txt", "2")
    with pytest.raises(FileQuotaExceeded, match="already holds 2 files.*start a new chat"):
        await add(files, "alice", "c", "three.txt", "3", max_files_per_conversation=2)
    assert await files.counts("alice") == (before[0][0] + 1, before[0][1] + 1)
    assert await files.usage("alice") == before[1] + 1
    assert [f.name for f in await files.list("alice", "c")] == ["first.txt", "two.txt"]
    assert await files.list("alice", "other") == []


async def test_replacing_a_file_does_not_count_against_the_limits(files):
    await add(files, "alice", "c", "data.txt", "a" * 800)
    await add(files, "alice", "c", "DATA.txt", "b" * 900, max_owner_bytes=1000, max_files_per_conversation=1)
    [only] = await files.list("alice", "c")
    assert (only.name, only.size) == ("DATA.txt", 900)
    assert await files.counts("alice") == (1, 1) and await files.usage("alice") == 900


async def test_reupload_of_the_same_name_replaces_file_and_index(files):
    old = await add(files, "alice", "c", "notes.txt", "old-canary\nsecond line\n")
    await add(files, "alice", "other", "notes.txt", "keep-me\n")  # same name, other conversation: untouched
    new = await add(files, "alice", "c", "Notes.TXT", "new-canary\n")
    assert [(f.id, f.name) for f in await files.list("alice", "c")] == [(new.id, "Notes.TXT")]
    assert await files.search("alice", "c", "old-canary") == []
    assert [h.text for h in await files.search("alice", "c", "new-canary")] == ["new-canary"]
    assert await files.content("alice", "c", old.id) is None
    assert await files.counts("alice") == (2, 2)
    assert [h.text for h in await files.search("alice", "other", "keep-me")] == ["keep-me"]


async def test_a_failure_mid_add_leaves_nothing(files, monkeypatch):
    await add(files, "alice", "c", "notes.txt", "original-canary\n")
    before = (await files.counts("alice"), await files.usage("alice"))
    real = FileStore._insert_passages

    async def fail_after_some_rows(self, tx, stored, passages):
        await real(self, tx, stored, list(passages)[:2])  # the file row and some index rows are written...
        raise RuntimeError("disk full")  # ...then the add fails

    monkeypatch.setattr(FileStore, "_insert_passages", fail_after_some_rows)
    with pytest.raises(RuntimeError, match="disk full"):
        await add(files, "alice", "c", "notes.txt", "replacement-canary\nmore\nand more\n")
    with pytest.raises(RuntimeError):
        await add(files, "alice", "c2", "other.csv", "a,b\n1,2\n3,4\n5,6\n")
    monkeypatch.undo()
    assert (await files.counts("alice"), await files.usage("alice")) == before
    assert [h.text for h in await files.search("alice", "c", "original-canary")] == ["original-canary"]
    assert await files.search("alice", "c", "replacement-canary") == [] and await files.list("alice", "c2") == []
    await add(files, "alice", "c", "after.txt", "still works\n")  # the store is usable after the rollback


async def test_delete_conversation_and_owner_leave_zero_rows(files):
    for conversation in ("c1", "c2"):
        await add(files, "alice", conversation, "orders.csv", "a,b\n1,2\n3,4\n")
        await add(files, "alice", conversation, "notes.txt", "one\ntwo\n")
    await add(files, "bob", "b1", "orders.csv", "a,b\n9,9\n")
    bob_before = (await files.counts("bob"), await files.usage("bob"))
    assert await files.delete_conversation("bob", "c1") == 0  # alice's conversation id in bob's hands
    assert await files.counts("alice") == (4, 8)
    assert await files.delete_conversation("alice", "c1") == 2
    assert await files.list("alice", "c1") == [] and await files.search("alice", "c1", "one") == []
    assert await files.counts("alice") == (2, 4)
    assert await files.delete_owner("alice") == 2
    assert await files.counts("alice") == (0, 0) and await files.usage("alice") == 0
    assert await files.all_for_owner("alice") == []
    assert (await files.counts("bob"), await files.usage("bob")) == bob_before
    assert await files.delete_owner("bob") == 1 and await files.counts("bob") == (0, 0)


async def test_delete_file_and_delete_unowned(files):
    kept = await add(files, "alice", "live", "a.txt", "alpha\n")
    gone = await add(files, "alice", "dead", "b.txt", "beta\n")
    await add(files, "bob", "dead", "c.txt", "gamma\n")
    assert not await files.delete_file("bob", "live", kept.id)
    assert await files.delete_unowned(["live"], created_before=gone.created_at - 1) == 0  # too new to sweep
    assert await files.delete_unowned(["live"]) == 2
    assert [f.id for f in await files.all_for_owner("alice")] == [kept.id]
    assert await files.counts("alice") == (1, 1) and await files.counts("bob") == (0, 0)
    assert await files.delete_file("alice", "live", kept.id)
    assert await files.counts("alice") == (0, 0)


async def test_missing_owner_or_conversation_fails_closed(files):
    read, data = upload("a.txt", "x")
    for owner, conversation in ((None, "c"), ("", "c"), ("alice", None), ("alice", "")):
        with pytest.raises(ValueError):
            await files.add(owner, conversation, read, data, **LIMITS)
        with pytest.raises(ValueError):
            await files.list(owner, conversation)
    with pytest.raises(ValueError):
        await files.delete_owner("")


async def test_files_survive_a_restart(make_store):
    first = make_store()
    pdf = _pdf("restart-canary on page one")
    read = read_upload("report.pdf", pdf, max_bytes=10 * MB)
    stored = await first.add("alice", "c", read, pdf, **LIMITS)
    await first._store.close()
    again = make_store()
    assert await again.list("alice", "c") == [stored]
    assert await again.content("alice", "c", stored.id) == pdf
    assert [(h.file_name, h.location) for h in await again.search("alice", "c", "restart-canary")] == [
        ("report.pdf", "page 1")]


def _pdf(text: str) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    pdf.add_page()
    pdf.cell(text=text)
    return bytes(pdf.output())
