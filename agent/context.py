"""What a tool may know about the user it is serving: passed per call as LangChain runtime context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class SessionView(Protocol):
    """The read-only face of a session that tools see. Never the raw session_hash."""

    fingerprint: str
    created_at: float
    last_active: float


@dataclass(frozen=True)
class TurnContext:
    """Runtime context of one agent run (``agent.astream(..., context=TurnContext(...))``).

    Built by the handler from the session it resolved; not checkpointed, not model-visible.
    """

    session: Any  # a SessionView; typed loosely so pydantic can build the tool schemas
