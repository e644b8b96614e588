"""Admission control: at most `limit` generation requests in the server (generating or waiting for the
engine) at once. Past it a request is turned away at once with 429, never queued without bound, so a
burst cannot pile up work (and memory) that no client will still be waiting for.

Also what a graceful shutdown waits on: `idle` is set whenever no generation request is in flight.
"""

from __future__ import annotations

import asyncio
import math

RETRY_AFTER_S = 2  # what 429 tells clients; short, since a slot frees as soon as any request ends


class Admission:
    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.active = 0
        self._idle: asyncio.Event | None = None  # created lazily inside the running loop

    @property
    def idle(self) -> asyncio.Event:
        if self._idle is None:
            self._idle = asyncio.Event()
            if self.active == 0:
                self._idle.set()
        return self._idle

    def try_enter(self) -> bool:
        """Take a slot if one is free (single-threaded event loop: no lock needed)."""
        if self.limit is not None and self.active >= self.limit:
            return False
        self.active += 1
        self.idle.clear()
        return True

    def leave(self) -> None:
        self.active -= 1
        if self.active == 0:
            self.idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True once nothing is in flight, False if `timeout` seconds pass first."""
        if math.isinf(timeout):
            await self.idle.wait()
            return True
        try:
            await asyncio.wait_for(self.idle.wait(), timeout)
            return True
        except TimeoutError:
            return False
