"""Two Gradio 6.31 costs that grow with use, measured in-process on the app's own Blocks.

* Per completed event, Gradio's queue rebuilds an analytics summary: a pandas DataFrame over the last
  ``GRADIO_ANALYTICS_MAX_EVENTS`` (default 10,000) events (``Queue.compute_analytics_summary``, in a
  worker thread, mostly holding the GIL). It runs even with ``GRADIO_ANALYTICS_ENABLED=False``; only
  ``GRADIO_ANALYTICS_CACHE_FREQUENCY=<k>`` (recompute every k events) or a small
  ``GRADIO_ANALYTICS_MAX_EVENTS`` bound it.
* Every second, on the event loop, ``StateHolder.delete_all_expired_state`` walks every SessionState
  Gradio keeps (one per session_hash seen, up to ``state_session_capacity`` = 10,000).

    .venv/bin/python bench/gradio_overheads.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT  # noqa: E402,F401

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def measure() -> dict:
    from gradio.state_holder import StateHolder

    from app_ng import build_app
    from settings import Settings

    data_dir = tempfile.mkdtemp(prefix="cmw-bench-gr-")
    app = build_app(Settings.from_env({"CMW_DATA_DIR": data_dir, "CMW_MODEL": "offline"}))
    queue = app.demo._queue
    out: dict = {"analytics_summary_ms": {}, "state_sweep_ms": {}}
    for n in (100, 1000, 10000):
        records = [{"time": time.time(), "status": "success", "process_time": 0.5 + (i % 7) / 10,
                    "function": "chat" if i % 3 else "respond", "session_hash": uuid.uuid4().hex[:11]}
                   for i in range(n)]
        queue.events_recorded, queue.event_count_at_last_cache = 1, 0

        def once():
            queue.event_count_at_last_cache = 0
            queue.compute_analytics_summary(records)

        out["analytics_summary_ms"][n] = 1000 * _time(once, 5)
    holder = StateHolder()
    holder.set_blocks(app.demo)
    for n in (1000, 10000):
        for i in range(len(holder.session_data), n):
            holder[f"h{i:06d}"]
        out["state_sweep_ms"][n] = 1000 * _time(holder.delete_all_expired_state, 5)
    closer = getattr(app, "close", None)
    if closer is not None:
        try:
            closer()
        except Exception:
            pass
    import shutil

    shutil.rmtree(data_dir, ignore_errors=True)
    return out


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out = measure()
    print(f"analytics summary per completed event: " + ", ".join(
        f"{ms:.2f} ms @ {n:,} events" for n, ms in out["analytics_summary_ms"].items()))
    print(f"state sweep every second: " + ", ".join(
        f"{ms:.2f} ms @ {n:,} sessions" for n, ms in out["state_sweep_ms"].items()))
    if args.json:
        args.json.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
