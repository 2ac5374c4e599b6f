"""Run app_ng with a candidate fix patched in, so the fix can be measured before it goes into the app.

This is a benchmark tool, not part of the app: it imports app_ng unchanged and patches in memory.

    CMW_BENCH_FIXES=release-gradio-state python bench/app_variant.py --host 127.0.0.1 --port 7861

Fixes (comma-separated in CMW_BENCH_FIXES; default: release-gradio-state):

``release-gradio-state``
    When the registry releases a session (idle expiry, size eviction, discard), also drop what Gradio
    keeps for that session_hash: its ``SessionState`` in ``state_holder`` (one per hash ever seen, kept
    up to ``state_session_capacity`` = 10,000 regardless of the app's TTL) and the queue's empty
    per-session leftovers. Runs on Gradio's event-loop thread (inside Gradio's own once-a-second state
    sweep), never from the registry's sweeper thread. After a batch of >= 100 releases it runs
    ``gc.collect()`` and glibc ``malloc_trim(0)`` so freed memory goes back to the OS.

``quiet-queue``
    ``demo.queue(status_update_rate=1.0)`` instead of ``"auto"``: Gradio then sends queue-position
    estimations once a second instead of re-broadcasting them to every waiting event each time an event
    starts (O(queue length) messages per start: O(N^2) for a burst of N joins).
"""

from __future__ import annotations

import collections
import ctypes
import gc
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import app_ng  # noqa: E402
from memory import registry as registry_module  # noqa: E402

log = logging.getLogger("cmw.bench.variant")
FIXES = {f.strip() for f in os.environ.get("CMW_BENCH_FIXES", "release-gradio-state").split(",") if f.strip()}
_released: collections.deque[str] = collections.deque()  # keys released by the registry (any thread)


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _install_release_gradio_state() -> None:
    from gradio.state_holder import StateHolder

    cache_cls = registry_module._ReleasingTTLCache
    original_expire, original_popitem = cache_cls.expire, cache_cls.popitem
    original_discard = registry_module.SessionRegistry.discard

    def expire(self, time=None):
        expired = original_expire(self, time)
        _released.extend(key for key, _ in expired)
        return expired

    def popitem(self):
        key, session = original_popitem(self)
        _released.append(key)
        return key, session

    def discard(self, session_key: str) -> None:
        original_discard(self, session_key)
        _released.append(session_key)

    cache_cls.expire, cache_cls.popitem = expire, popitem
    registry_module.SessionRegistry.discard = discard

    original_sweep = StateHolder.delete_all_expired_state

    def delete_all_expired_state(self):  # Gradio calls this every second on its event-loop thread
        dropped = 0
        queue = getattr(getattr(self, "blocks", None), "_queue", None)
        while _released:
            key = _released.popleft()
            if self.session_data.pop(key, None) is not None:
                dropped += 1
            self.time_last_used.pop(key, None)
            if queue is not None:
                if not queue.pending_event_ids_session.get(key, True):
                    queue.pending_event_ids_session.pop(key, None)
                messages = queue.pending_messages_per_session.get(key)
                if messages is not None and messages.empty():
                    queue.pending_messages_per_session.pop(key, None)
        if dropped >= 100:
            gc.collect()
            _malloc_trim()
            log.info("dropped Gradio state of %d released session(s)", dropped)
        return original_sweep(self)

    StateHolder.delete_all_expired_state = delete_all_expired_state


def _install_quiet_queue() -> None:
    import gradio as gr

    original_queue = gr.Blocks.queue

    def queue(self, *args, **kwargs):
        kwargs.setdefault("status_update_rate", 1.0)
        return original_queue(self, *args, **kwargs)

    gr.Blocks.queue = queue


if "release-gradio-state" in FIXES:
    _install_release_gradio_state()
if "quiet-queue" in FIXES:
    _install_quiet_queue()


if __name__ == "__main__":
    app_ng.main()
