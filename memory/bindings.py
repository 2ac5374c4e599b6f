"""Who owns a session_hash, for as long as Gradio may hold anything for it - and which events are whose.

Gradio keeps per-hash state (component values, a message queue) for as long as it remembers a hash,
independent of this app's live sessions. So the hash -> owner binding is kept here, apart from the
evictable live-session cache, and:

* a flood of fresh hashes cannot push anyone out: a full table refuses *new* bindings instead of
  evicting old ones (new bindings are also rate-limited per address and per owner by the guard);
* a binding leaves only after it was idle for its TTL with no stream (``queue/data``) or tab heartbeat
  open, and when it leaves, ``on_forget`` drops Gradio's state for that hash and the live session with
  it - nothing of the old owner remains for a new one to bind to.

Event ids (``call/<api>/<event_id>``, ``cancel``, ``stream/<event_id>``) are bearer tokens in Gradio;
:class:`RecentOwners` remembers which owner's request created each event (and uploaded each file), so only that
owner may use it.
Both hold keyed owner ids and Gradio ids only, never user content.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Callable


class Bound(Enum):
    YES = "yes"  # the key is (now) this owner's
    TAKEN = "taken"  # another owner's
    FULL = "full"  # no room for a new binding; nobody was evicted to make room


@dataclass
class _Binding:
    owner: str
    last_seen: float
    streams: int = 0


class SessionBindings:
    def __init__(self, *, maxsize: int, idle_ttl: float, timer: Callable[[], float] = time.monotonic):
        self.maxsize = maxsize
        self._ttl = idle_ttl
        self._timer = timer
        self._bindings: OrderedDict[str, _Binding] = OrderedDict()  # least recently seen first
        self._lock = threading.Lock()
        self.on_forget: Callable[[str], None] = lambda key: None  # set by the app: drops Gradio's state

    def owner_of(self, key: str) -> str | None:
        with self._lock:
            binding = self._bindings.get(key)
            return binding.owner if binding else None

    def bind(self, key: str, owner: str) -> Bound:
        """Bind ``key`` to ``owner`` at first use; a use by its owner restarts its idle clock."""
        self.expire()
        with self._lock:
            binding = self._bindings.get(key)
            if binding is not None:
                if binding.owner != owner:
                    return Bound.TAKEN
                binding.last_seen = self._timer()
                self._bindings.move_to_end(key)
                return Bound.YES
            if len(self._bindings) >= self.maxsize:
                return Bound.FULL
            self._bindings[key] = _Binding(owner, self._timer())
            return Bound.YES

    def stream_opened(self, key: str) -> None:
        with self._lock:
            if key in self._bindings:
                self._bindings[key].streams += 1

    def stream_closed(self, key: str) -> None:
        with self._lock:
            binding = self._bindings.get(key)
            if binding is not None:
                binding.streams = max(0, binding.streams - 1)
                binding.last_seen = self._timer()
                self._bindings.move_to_end(key)

    def expire(self) -> list[str]:
        """Drop bindings idle for the TTL with no stream open; Gradio's state for them goes too."""
        now = self._timer()
        gone = []
        with self._lock:
            # Only the idle head of the table is walked (no copy of it: this runs on every bind, and a
            # copy made creating a session cost more the more sessions there were).
            for key, binding in self._bindings.items():
                if now - binding.last_seen < self._ttl:
                    break  # ordered by last use: the rest are younger
                if binding.streams == 0:
                    gone.append(key)
            for key in gone:
                del self._bindings[key]
        for key in gone:
            self.on_forget(key)
        return gone

    def __len__(self) -> int:
        with self._lock:
            return len(self._bindings)


class RecentOwners:
    """key -> owner for recent events (event id) or uploads (cache path); the oldest is forgotten first (its key
    is then refused to all)."""

    def __init__(self, *, maxsize: int = 100_000, ttl: float = 3600.0, timer: Callable[[], float] = time.monotonic):
        self._maxsize, self._ttl, self._timer = maxsize, ttl, timer
        self._events: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, event_id: str, owner: str) -> None:
        now = self._timer()
        with self._lock:
            self._events[event_id] = (owner, now)
            self._events.move_to_end(event_id)
            while self._events and (len(self._events) > self._maxsize
                                    or now - next(iter(self._events.values()))[1] > self._ttl):
                self._events.popitem(last=False)

    def owner_of(self, event_id: str) -> str | None:
        with self._lock:
            entry = self._events.get(event_id)
        return entry[0] if entry and self._timer() - entry[1] <= self._ttl else None
