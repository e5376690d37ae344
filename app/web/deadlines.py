"""A request's deadline: a plain ``with`` block, cut off when it is up.

``asyncio.timeout`` does this as an asynchronous context manager; on
Python 3.11 its two coroutines and its state checks cost about 3% of a
GET by id, on every request, while nearly every request ends long before
its deadline. A `Deadline` arms the event loop's timer as its block starts
and disarms it as the block ends, both synchronously.

Its cancellation is told apart from any other as ``asyncio.timeout`` does
it: by the task's count of pending cancellations when the block started.
Only when no one else asked for one since does the ``CancelledError``
leave the block as ``TimeoutError``; a cancellation from elsewhere (a
shutdown, a client gone) stays one.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    """Cut off the ``with`` block's task at ``when`` (the loop's clock)."""

    __slots__ = ("_cancelling", "_task", "_timer", "expired", "when")

    def __init__(self, when: float) -> None:
        self.when = when
        self.expired = False

    def __enter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline needs a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._timer = asyncio.get_running_loop().call_at(self.when, self._expire)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._timer.cancel()
        if not self.expired:
            return
        # The cancellation this deadline asked for is taken back whatever
        # became of it; it ends the block only if it was the only one.
        if self._task.uncancel() <= self._cancelling and exc_type is (
            asyncio.CancelledError
        ):
            raise TimeoutError from exc

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()
