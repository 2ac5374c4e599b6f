"""A flood of fresh session hashes against a streaming victim, at default settings.

    .venv/bin/python bench/binding_flood.py [--requests 10000] [--quick]

Starts the app in-process on 127.0.0.1 (offline model, default limits, a temporary data directory),
lets a victim stream a long turn, and sends ``--requests`` guarded requests, each naming a fresh
session_hash (``queue/join`` of the cheap ``/conversations`` endpoint), 50 at a time, from one address
with one owner cookie. Prints how many were answered with what, how long it took, whether the victim's
binding moved and whether the victim's stream finished whole. Exit status 1 if the binding moved.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import httpx  # noqa: E402
from gradio_client import Client  # noqa: E402

from app_ng import build_app  # noqa: E402
from settings import Settings  # noqa: E402

LONG = 300


async def flood(url: str, count: int, fn_index: int) -> tuple[collections.Counter, float]:
    statuses: collections.Counter = collections.Counter()
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=50)) as http:
        await http.get(url + "config")  # the attacker's own owner cookie
        started = time.perf_counter()
        queue = iter(range(count))

        async def worker():
            for _ in queue:
                try:
                    response = await http.post(url + "gradio_api/queue/join", json={
                        "data": [], "fn_index": fn_index, "trigger_id": None, "session_hash": uuid.uuid4().hex[:11],
                        "event_data": None})
                except httpx.TransportError:
                    # A keep-alive connection the server closed as this request went out (seen when the
                    # machine is starved for longer than uvicorn's 5 s keep-alive): an answer of its own.
                    statuses["connection closed"] += 1
                else:
                    statuses[str(response.status_code)] += 1

        await asyncio.gather(*(worker() for _ in range(50)))
    return statuses, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--quick", action="store_true", help="500 requests (CI)")
    args = parser.parse_args()
    count = 500 if args.quick else args.requests
    settings = Settings.from_env({"CMW_DATA_DIR": tempfile.mkdtemp(prefix="cmw-flood-")})
    app = build_app(settings)
    if not args.port:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            args.port = probe.getsockname()[1]
    app.launch(server_name="127.0.0.1", server_port=args.port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{args.port}/"
    try:
        victim = Client(url, verbose=False)
        victim.predict("My name is Flooded", api_name="/chat")
        owner = app.registry.bindings.owner_of(victim.session_hash)
        job = victim.submit(f"Count to {LONG}", api_name="/chat")
        config = httpx.get(url + "config").json()
        fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "conversations")
        statuses, seconds = asyncio.run(flood(url, count, fn_index))
        moved = app.registry.bindings.owner_of(victim.session_hash) != owner
        whole = job.result(timeout=120).split()[-1] == str(LONG)
        recalled = victim.predict("What's my name?", api_name="/chat") == "Your name is Flooded."
        print(f"fresh-hash requests: {count} in {seconds:.1f} s ({count / seconds:.0f}/s), 50 at a time")
        print("answers: " + ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items())))
        print(f"bindings held: {len(app.registry.bindings)} (table size {app.registry.bindings.maxsize})")
        print(f"victim binding moved: {moved}; victim stream finished whole: {whole}; name recalled: {recalled}")
        return 1 if moved or not whole or not recalled else 0
    finally:
        app.close()


if __name__ == "__main__":
    sys.exit(main())
