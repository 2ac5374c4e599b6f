"""Where a request becomes a session: resolved once, here, then passed down explicitly."""

from __future__ import annotations

import gradio as gr

from memory.registry import SessionRegistry
from memory.session import Session
from security.caller import caller_of
from security.owner import OwnerCredentials

NO_SESSION_MESSAGE = ("This endpoint needs a session: use the web page, or gradio_client "
                      "(one Client is one session). Direct /run calls are not served.")
NO_COOKIE_MESSAGE = ("Your browser did not send this site's session cookie. Enable cookies for this site "
                     "and reload the page.")


def client_host(request) -> str:
    raw = getattr(request, "request", None)
    client = raw.client if raw is not None else getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


class SessionEdge:
    """Resolves the caller's session. Holds references to shared services only."""

    def __init__(self, registry: SessionRegistry, credentials: OwnerCredentials, on_first_request=None):
        self.registry = registry
        self.credentials = credentials
        self._on_first_request = on_first_request

    async def resolve(self, request: gr.Request | None) -> Session:
        """The caller's session: by session_hash, only for the owner it is bound to, rehydrated from the
        store if it was evicted. Refuses (never defaults) when the hash or the owner is missing."""
        session_hash = getattr(request, "session_hash", None) if request is not None else None
        if not session_hash:
            raise gr.Error(NO_SESSION_MESSAGE, print_exception=False)
        caller = caller_of(request)
        if caller is None or caller.owner is None:
            raise gr.Error(NO_COOKIE_MESSAGE, print_exception=False)
        if self._on_first_request is not None:
            await self._on_first_request()
        username = getattr(request, "username", None)
        session = self.registry.get_or_create(session_hash, caller.owner, username)
        session.principal = session.principal or self.credentials.principal(caller.owner, username)
        await session.agent.rehydrate(session.principal, session.fingerprint)
        return session

    async def resolve_showing(self, request: gr.Request | None, conversation_ref: str | None) -> Session:
        """:meth:`resolve`, then follow the tab's conversation reference, if it is this owner's."""
        session = await self.resolve(request)
        if conversation_ref and conversation_ref != session.conversation.conversation_id:
            await session.agent.open(conversation_ref, session.principal)
        return session

    def existing(self, request: gr.Request | None) -> Session | None:
        """The caller's live session, if there is one and it is theirs; never creates one."""
        session_hash = getattr(request, "session_hash", None) if request is not None else None
        caller = caller_of(request)
        session = self.registry.peek(session_hash) if session_hash else None
        if session is None or caller is None:
            return None
        return session if session.may_be_used_by(caller.owner, getattr(request, "username", None)) else None

    @staticmethod
    def tab_only(request: gr.Request | None) -> bool:
        """Whether this browser keeps no cookie, so its session lives only as long as the tab."""
        caller = caller_of(request)
        return bool(caller and caller.tab_only)
