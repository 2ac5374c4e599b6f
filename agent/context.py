"""What a tool may know about the user it serves: a frozen, typed view passed per call as runtime context."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TurnContext:
    """Runtime context of one agent run (``agent.astream(..., context=TurnContext(...))``).

    Built by the handler from the session it resolved; not checkpointed, not model-visible, and never the
    session object itself: tools can neither reach another conversation nor the store. Cart changes go
    through the conversation's checkpointed state (see agent/tools.py).
    """

    conversation_id: str
    fingerprint: str  # keyed one-way hash of the session key; never the raw session_hash
    created_at: float
    last_active: float
