"""Turn-taking, within one process, for transactions that write the same
document.

Two transactions that write one document (a model's version counter) cannot
both commit: the store aborts one, which runs again after a backoff. With
many clients on one model most attempts are spent so, and the last ones
wait the longest. Transactions of this process that name the same key run
one after another instead, in the order they came; those of other processes
still meet them in the store and run again as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable


class Turns:
    """One lock per key, kept only while someone holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._users: dict[Hashable, int] = {}

    @contextlib.asynccontextmanager
    async def of(self, key: Hashable | None) -> AsyncIterator[None]:
        """Hold ``key``'s turn while the block runs; no turn for None."""
        if key is None:
            yield
            return
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]

    def __len__(self) -> int:
        """How many keys are held or awaited."""
        return len(self._locks)
