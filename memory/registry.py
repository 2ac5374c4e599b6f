"""SessionRegistry: the one per-user map in the process.

Live sessions: a ``cachetools.TTLCache`` from session key to :class:`Session`, bounded in size
(``CMW_SESSION_MAX``) and idle time (``CMW_SESSION_TTL``; each access restarts the clock). Whatever way an
entry leaves - expiry, size eviction, explicit discard - the session is released, and it comes back from
the store on the next request. Get-or-create is atomic.

Beside it, and outliving it, the registry keeps who owns each key (:class:`memory.bindings.SessionBindings`)
and which owner created each Gradio event (:class:`memory.bindings.RecentOwners`): evicting a live session
never frees its key for someone else.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Callable, Hashable

from cachetools import TTLCache

from memory.bindings import Bound, RecentOwners, SessionBindings
from memory.session import Session, SessionFactory


class _ReleasingTTLCache(TTLCache):
    """A TTLCache that releases every session it drops, by expiry or by size eviction."""

    def popitem(self):
        key, session = super().popitem()
        session.release()
        return key, session

    def expire(self, time=None):
        expired = super().expire(time)
        for _, session in expired:
            session.release()
        return expired


class SessionRegistry:
    def __init__(self, factory: SessionFactory, *, maxsize: int, ttl: float, fingerprint: Callable[[Hashable], str],
                 timer: Callable[[], float] = time.monotonic, bindings_max: int | None = None,
                 binding_ttl: float | None = None):
        """``fingerprint``: the keyed one-way hash that names a session in logs, the UI and the store.
        Bindings default to ten times the live sessions and the same idle TTL.

        Keys are Gradio session_hash strings, or other hashable types that can never equal one (an MCP
        session is a ``mcp_server.keys.McpSessionKey``): no string prefixes, so no two kinds can collide.
        """
        self._factory = factory
        self._fingerprint = fingerprint
        self._cache = _ReleasingTTLCache(maxsize=maxsize, ttl=ttl, timer=timer)
        self._lock = threading.Lock()
        self.bindings = SessionBindings(maxsize=bindings_max or 10 * maxsize, idle_ttl=binding_ttl or ttl,
                                        timer=timer)
        self.bindings.on_forget = self.close
        self.events = RecentOwners(timer=timer)
        self.uploads = RecentOwners(timer=timer)  # Gradio cache path of an upload -> the owner who uploaded it
        self.forget_state: Callable[[str], None] = lambda key: None  # set by the app: Gradio's per-hash state

    def get_or_create(self, session_key: Hashable, owner: str | None = None, username: str | None = None) -> Session:
        """The session for ``session_key``, created on first use; its idle clock restarts.

        A session is only ever served to the owner it was created for: a request naming the same key
        with another owner gets a fresh session that is not registered (fail closed).
        """
        if not session_key:
            raise ValueError("a session key is required; refusing to fall back to a shared session")
        bound = self.bindings.bind(session_key, owner) if owner else Bound.TAKEN
        with self._lock:
            self._cache.expire()
            session = self._cache.get(session_key)
            if bound is not Bound.YES or (session is not None and not session.may_be_used_by(owner, username)):
                stranger = self._factory(self._fingerprint(secrets.token_hex(16)), owner)
                stranger.username = username
                return stranger
            if session is None:
                session = self._factory(self._fingerprint(session_key), owner)
            session.username = session.username or username
            self._cache[session_key] = session  # (re)insert: restarts the idle TTL
            session.touch()
            return session

    def bind(self, session_key: str, owner: str) -> Bound:
        """Bind a key to ``owner`` at its first use (see :class:`SessionBindings`)."""
        return self.bindings.bind(session_key, owner) if session_key and owner else Bound.TAKEN

    def peek(self, session_key: Hashable) -> Session | None:
        """The live session for a key without creating or touching it."""
        with self._lock:
            self._cache.expire()
            return self._cache.get(session_key)

    def discard(self, session_key: Hashable) -> None:
        """Release the live session of a key (its binding stays: nobody else can take the key)."""
        with self._lock:
            session = self._cache.pop(session_key, None)
        if session is not None:
            session.release()

    def close(self, session_key: str) -> None:
        """A tab closed (or its binding idled out): release its live session and drop Gradio's state for
        it, so nothing it typed or was shown stays behind. The binding itself stays until it idles out."""
        self.discard(session_key)
        self.forget_state(session_key)

    def expire(self) -> int:
        """Release idle live sessions and forget idle bindings; how many live sessions were released."""
        self.bindings.expire()
        with self._lock:
            return len(self._cache.expire())

    def __len__(self) -> int:
        with self._lock:
            self._cache.expire()
            return len(self._cache)
