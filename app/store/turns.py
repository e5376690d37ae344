"""Turn-taking and batching, within one process, for transactions that
write the same document.

Two transactions that write one document (a model's version counter) cannot
both commit: the store aborts one, which runs again after a backoff. With
many clients on one model most attempts are spent so, and the last ones
wait the longest. Transactions of this process that name the same key run
one after another instead, in the order they came; those of other processes
still meet them in the store and run again as before. Where the changes
can share a transaction, `Batches` goes further: those that arrive while
one runs go together in the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Generic, TypeVar


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


Item = TypeVar("Item")
R = TypeVar("R")
BatchRun = Callable[[Hashable, list[Item]], Awaitable[list[R | Exception]]]


class Batches(Generic[Item, R]):
    """Items for one key that arrive while a batch of that key runs, run
    together as the next batch, by ``run(key, items)``: one answer (a
    result or an exception) per item, in order.

    The batches run in a task of their own, outside the context of any one
    request. An item whose caller gives up before its batch starts is
    dropped; one already in a running batch runs on.
    """

    def __init__(self, run: BatchRun[Item, R], *, most: int = 64) -> None:
        self._run = run
        self._most = most
        self._waiting: dict[Hashable, list[tuple[Item, asyncio.Future[R]]]] = {}
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}

    async def submit(self, key: Hashable, item: Item) -> R:
        """Run ``item`` in the next batch of ``key``; its answer."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        entry = (item, future)
        self._waiting.setdefault(key, []).append(entry)
        if key not in self._tasks:
            task = asyncio.create_task(self._drain(key), context=contextvars.Context())
            self._tasks[key] = task
        try:
            return await future
        except asyncio.CancelledError:
            waiting = self._waiting.get(key, [])
            if entry in waiting:
                waiting.remove(entry)
            raise

    async def _drain(self, key: Hashable) -> None:
        try:
            while self._waiting.get(key):
                batch = self._waiting[key][: self._most]
                del self._waiting[key][: self._most]
                try:
                    answers = await self._run(key, [item for item, _ in batch])
                except Exception as exc:
                    answers = [exc] * len(batch)
                for (_, future), answer in zip(batch, answers, strict=True):
                    if future.done():
                        continue
                    if isinstance(answer, Exception):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
        except asyncio.CancelledError:
            for _, future in self._waiting.get(key, []):
                future.cancel()
            raise
        finally:
            self._waiting.pop(key, None)
            del self._tasks[key]
