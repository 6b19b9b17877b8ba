"""Which adapters this process's turns are using right now, so that an adapter swapped out is
unloaded from the engine only after the requests still using it have finished."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterator

from backend.engines import AdapterRef


class InFlight:
    """How many turns of this process are using each adapter name right now, so an adapter
    that was swapped out is unloaded only after the requests still using it have finished."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    @contextlib.contextmanager
    def track(self, adapter: AdapterRef | None) -> Iterator[None]:
        if adapter is None:
            yield
            return
        self._counts[adapter.name] += 1
        try:
            yield
        finally:
            self._counts[adapter.name] -= 1
            if not self._counts[adapter.name]:
                del self._counts[adapter.name]

    def count(self, name: str) -> int:
        return self._counts[name]

    async def drained(self, name: str, *, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        # Polled: this runs only after a swap, and an Event per adapter name is not worth it.
        while self._counts[name] and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return not self._counts[name]
