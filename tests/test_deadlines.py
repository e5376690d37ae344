"""A request's deadline as a plain ``with`` block (app.web.deadlines)."""

from __future__ import annotations

import asyncio

import pytest

from app.web.deadlines import Deadline


def _in(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


def _cancelling() -> int:
    task = asyncio.current_task()
    assert task is not None
    return task.cancelling()


async def test_a_block_past_its_deadline_is_cut_off_with_timeout_error() -> None:
    loop = asyncio.get_running_loop()
    bound = Deadline(_in(0.05))

    with pytest.raises(TimeoutError):
        with bound:
            await asyncio.sleep(5)

    assert bound.expired
    assert loop.time() >= bound.when  # never early
    assert _cancelling() == 0  # the deadline's cancellation is taken back


async def test_a_block_within_its_deadline_runs_to_its_end() -> None:
    bound = Deadline(_in(1.0))

    with bound:
        await asyncio.sleep(0.01)

    assert not bound.expired


async def test_a_finished_block_is_never_cancelled_later() -> None:
    with Deadline(_in(0.02)):
        pass

    await asyncio.sleep(0.05)  # would be cut off if the timer still ran

    assert _cancelling() == 0


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    inside = asyncio.Event()

    async def bounded() -> None:
        with Deadline(_in(5.0)):
            inside.set()
            await asyncio.sleep(5)

    task = asyncio.create_task(bounded())
    await inside.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancellation_racing_the_deadline_is_not_taken_for_it() -> None:
    # The deadline's cancel and another's arrive together: the other one
    # wins, as with asyncio.timeout, so the task still ends cancelled.
    inside = asyncio.Event()
    bounds: list[Deadline] = []

    async def bounded() -> None:
        bound = Deadline(_in(5.0))
        bounds.append(bound)
        with bound:
            inside.set()
            await asyncio.sleep(5)

    task = asyncio.create_task(bounded())
    await inside.wait()
    bounds[0]._expire()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_block_that_swallows_the_cut_off_leaves_no_cancellation() -> None:
    # Code inside that catches CancelledError and goes on must not leave
    # the task marked as being cancelled, nor end the block with an error.
    bound = Deadline(_in(0.02))

    with bound:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            pass
        await asyncio.sleep(0)

    assert bound.expired
    assert _cancelling() == 0
