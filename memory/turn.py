"""TurnHandle: the cancel handle of one requested turn.

Created when a turn is requested - before it waits for a slot or for its conversation's lock - so a
Stop pressed while it waits cancels it too. The running turn races its model stream against
:meth:`TurnHandle.wait`, so Stop ends it at once even while the model is silent.
"""

from __future__ import annotations

import asyncio


class TurnHandle:
    def __init__(self) -> None:
        self._cancelled = asyncio.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    async def wait(self) -> None:
        await self._cancelled.wait()
