"""Who is calling: resolved once per request by the HTTP guard, read by every later layer.

The guard (:mod:`security.http_guard`) stores a :class:`Caller` in the ASGI scope's ``state``; a
Gradio handler reaches it through ``gr.Request.request.state``. Nothing else works out the owner.
"""

from __future__ import annotations

from dataclasses import dataclass

SCOPE_KEY = "cmw_caller"


@dataclass(frozen=True)
class Caller:
    """``owner``: keyed hash of the owner cookie's token, or - for a browser that keeps no cookie - of the
    tab's session_hash (``tab_only``: the session ends with the tab). None: the request named no session
    and carried no valid cookie."""

    owner: str | None
    tab_only: bool = False


def caller_of(request) -> Caller | None:
    """The Caller the guard attached to this request (a ``gr.Request`` or a Starlette request)."""
    raw = getattr(request, "request", None) if request is not None else None
    raw = raw if raw is not None else request
    state = getattr(raw, "state", None)
    caller = getattr(state, SCOPE_KEY, None) if state is not None else None
    return caller if isinstance(caller, Caller) else None
