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
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from app.errors import DatabaseUnavailable, RegistryError

log = logging.getLogger("deardiary.store.turns")


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


Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")
R = TypeVar("R")
BatchRun = Callable[[Key, list[Item]], Awaitable[list[R | Exception]]]


class Batches(Generic[Key, Item, R]):
    """Items for one key that arrive while a batch of that key runs, run
    together as the next batch, by ``run(key, items)``: one answer (a
    result or an exception) per item, in order. A batch whose run raises
    gives every item that error: it is never run again here, as it may have
    committed without telling.

    The batches run in a task of their own, outside the context of any one
    request. An item waits ``patience_s`` at most, as its caller does: one
    whose caller gave up before its batch starts is dropped, and a batch
    stops when its most impatient item's time is up, as a change of its own
    would, answering `DatabaseUnavailable`.

    With ``regroup``, the batch after one of n items waits until n items
    wait: for half as long as that batch ran, `REGROUP_MOST_S` and half
    the time left to the most impatient waiting item, whichever is least.
    Callers answered together come back together, but not at once: without
    the wait the first few back run as a batch of their own, paying a
    whole transaction's round trips for a few items while the rest queue
    behind it, and under steady load the batches alternate between nearly
    all callers and a few. After a batch of one, the next runs as soon as
    one item comes.
    """

    def __init__(
        self,
        run: BatchRun[Key, Item, R],
        *,
        most: int = 64,
        patience_s: float | None = None,
        regroup: bool = False,
    ) -> None:
        self._run = run
        self._most = most
        self._patience_s = patience_s
        self._regroup = regroup
        # The key whose next batch waits for items, how many, and the
        # future that wakes it.
        self._wanted: dict[Key, tuple[int, asyncio.Future[None]]] = {}
        self._waiting: dict[Key, list[_Waiting[Item, R]]] = {}
        self._tasks: dict[Key, asyncio.Task[None]] = {}

    async def submit(self, key: Key, item: Item) -> R:
        """Run ``item`` in the next batch of ``key``: its result, or its
        exception raised."""
        loop = asyncio.get_running_loop()
        patience = self._patience_s
        future: asyncio.Future[R] = loop.create_future()
        deadline = None if patience is None else loop.time() + patience
        entry = _Waiting(item, future, deadline)
        waiting = self._waiting.setdefault(key, [])
        waiting.append(entry)
        wanted = self._wanted.get(key)
        if wanted is not None and len(waiting) >= wanted[0]:
            _wake(wanted[1])
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

    async def _drain(self, key: Key) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Waiting[Item, R]] = []
        ran: tuple[int, float] | None = None  # the last batch's size and time
        try:
            while True:
                if ran is not None and self._regroup:
                    await self._regather(key, *ran)
                if not self._waiting.get(key):
                    break
                batch = self._next_batch(key)
                ran = None
                if batch:
                    started = loop.time()
                    await self._run_batch(key, batch)
                    ran = (len(batch), loop.time() - started)
                batch = []
        except asyncio.CancelledError:
            for entry in [*batch, *self._waiting.get(key, [])]:
                entry.future.cancel()
            raise
        finally:
            self._waiting.pop(key, None)
            del self._tasks[key]

    async def _regather(self, key: Key, count: int, ran_s: float) -> None:
        """Wait until ``count`` items of ``key`` wait, for as long as
        regrouping allows (see `Batches`)."""
        waiting = self._waiting.get(key, [])
        if len(waiting) >= count:
            return
        loop = asyncio.get_running_loop()
        limit = min(ran_s / 2, REGROUP_MOST_S)
        deadlines = [entry.deadline for entry in waiting if entry.deadline is not None]
        if deadlines:
            limit = min(limit, (min(deadlines) - loop.time()) / 2)
        woken: asyncio.Future[None] = loop.create_future()
        self._wanted[key] = (count, woken)
        timer = loop.call_later(max(limit, 0.0), _wake, woken)
        try:
            await woken
        finally:
            timer.cancel()
            del self._wanted[key]

    def _next_batch(self, key: Key) -> list[_Waiting[Item, R]]:
        waiting = self._waiting[key]
        now = asyncio.get_running_loop().time()
        for entry in waiting[: self._most]:
            if entry.deadline is not None and entry.deadline <= now:
                entry.answer(DatabaseUnavailable(_IMPATIENT))
        batch = [entry for entry in waiting[: self._most] if not entry.future.done()]
        del waiting[: self._most]
        return batch

    async def _run_batch(self, key: Key, batch: list[_Waiting[Item, R]]) -> None:
        deadlines = [entry.deadline for entry in batch if entry.deadline is not None]
        answers: list[R | Exception]
        try:
            async with asyncio.timeout_at(min(deadlines) if deadlines else None):
                answers = await self._run(key, [entry.item for entry in batch])
            if len(answers) != len(batch):
                # Every caller must hear: a wrong count is the batch's error.
                raise RuntimeError(f"{len(answers)} answers to {len(batch)} items")
        except TimeoutError:
            answers = [DatabaseUnavailable(_IMPATIENT) for _ in batch]
        except Exception as exc:
            if not isinstance(exc, RegistryError):
                log.error("a batch of %r failed", key, exc_info=exc)
            answers = [exc] * len(batch)
        for entry, answer in zip(batch, answers, strict=True):
            entry.answer(answer)


def sole(answers: list[R | Exception]) -> R:
    """The result of a batch of one, its exception raised."""
    (answer,) = answers
    if isinstance(answer, Exception):
        raise answer
    return answer


async def one_by_one(
    items: list[Item], run: Callable[[Item], Awaitable[R]]
) -> list[R | Exception]:
    """Each item's result of ``run``, or the exception it raised, one item
    after another: how a batch rolled back as a whole gives each item its
    own answer."""
    answers: list[R | Exception] = []
    for item in items:
        try:
            answers.append(await run(item))
        except Exception as exc:
            answers.append(exc)
    return answers


_IMPATIENT = "the database did not answer in time"

# The longest a regrouping batch waits for its callers to come back: long
# enough for a few dozen clients answered together, short beside a request's
# deadline, and a bound after a batch that ran long (a slow or failing store).
REGROUP_MOST_S = 0.05


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass
class _Waiting(Generic[Item, R]):
    """An item, the future its caller awaits, and when the caller gives up
    (loop time)."""

    item: Item
    future: asyncio.Future[R]
    deadline: float | None

    def answer(self, answer: R | Exception) -> None:
        if self.future.done():
            return
        if isinstance(answer, Exception):
            self.future.set_exception(answer)
        else:
            self.future.set_result(answer)
