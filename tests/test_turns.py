"""Turn-taking on a key within one process (app.store.turns)."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from app.errors import DatabaseUnavailable
from app.store.turns import Batches, Turns


async def _hold(turns: Turns, key: str | None, log: list[str], name: str) -> None:
    async with turns.of(key):
        log.append(f"{name} in")
        await asyncio.sleep(0.001)
        log.append(f"{name} out")


async def test_holders_of_one_key_run_one_at_a_time_in_order() -> None:
    turns, log = Turns(), list[str]()

    await asyncio.gather(*(_hold(turns, "m", log, str(n)) for n in range(3)))

    assert log == ["0 in", "0 out", "1 in", "1 out", "2 in", "2 out"]
    assert len(turns) == 0  # nothing kept once nobody waits


async def test_other_keys_and_no_key_do_not_wait() -> None:
    turns, log = Turns(), list[str]()

    await asyncio.gather(
        _hold(turns, "a", log, "a"),
        _hold(turns, "b", log, "b"),
        _hold(turns, None, log, "-"),
    )

    assert log[:3] == ["a in", "b in", "- in"]


async def test_a_failing_holder_passes_the_turn_on() -> None:
    turns, log = Turns(), list[str]()

    async def fail() -> None:
        async with turns.of("m"):
            raise RuntimeError("refused")

    results = await asyncio.gather(
        fail(), _hold(turns, "m", log, "next"), return_exceptions=True
    )

    assert isinstance(results[0], RuntimeError)
    assert log == ["next in", "next out"]
    assert len(turns) == 0


# Batches ----------------------------------------------------------------------


class _Runs:
    """A batch runner that records its batches and answers each item."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()

    async def __call__(self, key: Hashable, items: list[int]) -> list[int | Exception]:
        self.batches.append(items)
        await self.release.wait()
        return [ValueError(f"odd {n}") if n % 2 else n * 10 for n in items]


async def test_items_that_arrive_while_a_batch_runs_go_in_the_next_together() -> None:
    runs = _Runs()
    batches = Batches(runs)
    first = asyncio.ensure_future(batches.submit("m", 2))
    await asyncio.sleep(0)  # the first batch starts, with the first item alone
    others = [asyncio.ensure_future(batches.submit("m", n)) for n in (3, 4)]
    await asyncio.sleep(0)
    runs.release.set()

    answers = await asyncio.gather(first, *others, return_exceptions=True)

    assert runs.batches == [[2], [3, 4]]
    assert answers[0] == 20 and answers[2] == 40
    assert isinstance(answers[1], ValueError)


async def test_a_batch_that_fails_as_a_whole_fails_each_item() -> None:
    async def broken(key: Hashable, items: list[int]) -> list[int | Exception]:
        raise RuntimeError("store down")

    batches: Batches[str, int, int] = Batches(broken)

    answers = await asyncio.gather(
        batches.submit("m", 1), batches.submit("m", 2), return_exceptions=True
    )

    assert [type(answer) for answer in answers] == [RuntimeError, RuntimeError]


async def test_an_item_given_up_before_its_batch_starts_is_dropped() -> None:
    runs = _Runs()
    batches = Batches(runs)
    first = asyncio.ensure_future(batches.submit("m", 2))
    await asyncio.sleep(0)
    given_up = asyncio.ensure_future(batches.submit("m", 4))
    await asyncio.sleep(0)

    given_up.cancel()
    runs.release.set()

    assert await first == 20
    assert runs.batches == [[2]]


async def test_an_item_whose_caller_gave_up_waiting_is_not_run() -> None:
    runs = _Runs()
    batches = Batches(runs, patience_s=0.01)
    first = asyncio.ensure_future(batches.submit("m", 2))
    await asyncio.sleep(0)
    late = asyncio.ensure_future(batches.submit("m", 4))
    await asyncio.sleep(0.02)  # the first batch outlives both callers' patience

    runs.release.set()
    answers = await asyncio.gather(first, late, return_exceptions=True)

    assert [type(answer) for answer in answers] == [DatabaseUnavailable] * 2
    assert runs.batches == [[2]]
