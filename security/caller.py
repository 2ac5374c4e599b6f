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


def may_use(bound_owner: str | None, bound_username: str | None, owner: str | None,
            username: str | None) -> bool:
    """The one rule for every layer: a session may be used only by the owner it was bound to at first use
    and, once a login name is known for it, only under that name. The HTTP guard, which does not know the
    login name, passes ``username=None``; handlers pass ``gr.Request.username``."""
    if bound_owner is None or owner is None or bound_owner != owner:
        return False
    return bound_username is None or username is None or bound_username == username
