"""Attached files: upload + index time and search latency for a 10 MB CSV and a 100-page PDF, and RSS.

    .venv/bin/python bench/file_upload.py [--quick]

Starts the app in-process on 127.0.0.1 (offline model, SQLite in a temporary data directory, or
PostgreSQL with DATABASE_URL), makes the files, and for each: uploads it through ``/upload`` with
gradio_client (upload to Gradio's cache, content checks, parsing, storing the original and its
full-text rows, deleting the cache copy), then runs searches through the store (rare word, common word)
and through ``/chat`` ("Search my files for ..."). RSS of this process is sampled every 50 ms throughout.
``--quick`` (CI): a 1 MB CSV and a 10-page PDF. Exit status 1 if an upload or a search failed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import psutil  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from app_ng import build_app  # noqa: E402
from gradio_compat import server_loop  # noqa: E402
from settings import Settings  # noqa: E402

RARE = "zebracanary"
for chatty in ("httpx", "httpcore"):  # gradio_client logs every request
    logging.getLogger(chatty).setLevel(logging.WARNING)


class RssSampler(threading.Thread):
    """The peak RSS of this process while running."""

    def __init__(self):
        super().__init__(daemon=True)
        self.process, self.peak, self.done = psutil.Process(), 0, threading.Event()

    def run(self):
        while not self.done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.05)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


def make_csv(path: Path, megabytes: float) -> int:
    rows, size = ["order,customer,item,amount,note"], 0
    i = 0
    while size < megabytes * 1024 * 1024:
        note = RARE if i == 777 else f"regular delivery batch {i % 97}"
        line = f"{i},customer{i % 5000},item{i % 300},{(i * 7) % 1000}.{i % 100:02d},{note}"
        rows.append(line)
        size += len(line) + 1
        i += 1
    path.write_text("\n".join(rows) + "\n")
    return i


def make_pdf(path: Path, pages: int) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for page in range(1, pages + 1):
        pdf.add_page()
        for line in range(40):
            word = RARE if (page, line) == (pages // 2, 7) else "quarterly"
            pdf.cell(0, 6, f"Page {page} line {line}: the {word} report covers orders and regular delivery.",
                     new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))


def on_loop(app, coroutine):
    return asyncio.run_coroutine_threadsafe(coroutine, server_loop(app.demo)).result(timeout=120)


def measure(app, client: Client, path: Path, searches: int) -> dict:
    sampler = RssSampler()
    sampler.start()
    before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    summary = client.predict(handle_file(str(path)), api_name="/upload")
    upload_s = time.perf_counter() - started
    session = app.registry.peek(client.session_hash)
    owner, conversation = session.principal, session.conversation.conversation_id
    files = app.manager.files
    timings = {}
    for label, word in (("rare", RARE), ("common", "regular delivery")):
        latencies, hits = [], []
        for _ in range(searches):
            t = time.perf_counter()
            hits = on_loop(app, files.search(owner, conversation, word))
            latencies.append(time.perf_counter() - t)
        timings[label] = (statistics.median(latencies), max(latencies), len(hits))
    t = time.perf_counter()
    answer = client.predict(f"Search my files for {RARE}", api_name="/chat")
    chat_s = time.perf_counter() - t
    peak = sampler.stop()
    return {"summary": summary, "upload_s": upload_s, "searches": timings, "chat_s": chat_s,
            "found": RARE in answer, "rss_before": before, "rss_peak": peak,
            "rss_after": psutil.Process().memory_info().rss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 1 MB CSV and a 10-page PDF (CI)")
    args = parser.parse_args()
    csv_mb, pdf_pages, searches = (1, 10, 5) if args.quick else (10, 100, 20)
    work = Path(tempfile.mkdtemp(prefix="cmw-files-bench-"))
    settings = Settings.from_env({"CMW_DATA_DIR": str(work / "data"), "CMW_MAX_UPLOAD_MB": "12",
                                  "CMW_RATE_LIMIT_PER_MINUTE": "0", "CMW_OFFLINE_TOKEN_DELAY": "0",
                                  **({"DATABASE_URL": os.environ["DATABASE_URL"]} if os.environ.get("DATABASE_URL") else {})})
    app = build_app(settings)
    app.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    failed = False
    try:
        csv_path, pdf_path = work / "orders.csv", work / "report.pdf"
        rows = make_csv(csv_path, csv_mb)
        make_pdf(pdf_path, pdf_pages)
        backend = "PostgreSQL" if settings.database_url else "SQLite"
        print(f"store: {backend}; searches per word: {searches}")
        for path, what in ((csv_path, f"CSV {path_mb(csv_path):.1f} MB, {rows:,} rows"),
                           (pdf_path, f"PDF {pdf_pages} pages, {path_mb(pdf_path):.2f} MB")):
            client = Client(app.demo.local_url, verbose=False)
            result = measure(app, client, path, searches)
            rare, common = result["searches"]["rare"], result["searches"]["common"]
            print(f"{what}: upload+index {result['upload_s']:.2f} s -> {result['summary']!r}")
            print(f"  search rare word p50/max {rare[0] * 1000:.1f}/{rare[1] * 1000:.1f} ms ({rare[2]} hit), "
                  f"common words p50/max {common[0] * 1000:.1f}/{common[1] * 1000:.1f} ms ({common[2]} hits), "
                  f"via /chat {result['chat_s'] * 1000:.0f} ms")
            print(f"  RSS {mib(result['rss_before']):.0f} MiB before, peak {mib(result['rss_peak']):.0f} MiB, "
                  f"{mib(result['rss_after']):.0f} MiB after")
            failed |= result["summary"].startswith("Not attached") or not result["found"] or rare[2] < 1
    finally:
        app.close()
    return 1 if failed else 0


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def path_mb(path: Path) -> float:
    return path.stat().st_size / 1048576


def mib(n: int) -> float:
    return n / 1048576


if __name__ == "__main__":
    sys.exit(main())
