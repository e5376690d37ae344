"""Turn-taking on a key within one process (app.store.turns)."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from app.errors import DatabaseUnavailable
from app.store import turns
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


async def test_a_batch_answered_with_the_wrong_count_fails_each_item() -> None:
    async def short(key: Hashable, items: list[int]) -> list[int | Exception]:
        return items[:1]

    batches: Batches[str, int, int] = Batches(short)

    async with asyncio.timeout(5):  # not left waiting for an answer
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


class _Timed:
    """A batch runner that takes ``seconds`` per batch (the first
    ``first`` if given) and records its batches and when each started
    (loop time)."""

    def __init__(self, seconds: float, first: float | None = None) -> None:
        self.seconds = seconds
        self.first = first
        self.batches: list[list[int]] = []
        self.started: list[float] = []

    async def __call__(self, key: Hashable, items: list[int]) -> list[int | Exception]:
        self.batches.append(items)
        self.started.append(asyncio.get_running_loop().time())
        first = self.first is not None and len(self.batches) == 1
        await asyncio.sleep(self.first if first and self.first else self.seconds)
        return items


async def _caller(batches: Batches[str, int, int], n: int, back_after: float) -> None:
    await batches.submit("m", n)
    await asyncio.sleep(back_after)
    await batches.submit("m", 10 + n)


@pytest.fixture
def long_regroups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regrouping bounded by the batches' run time alone, so that these
    tests do not hang on how fast the machine schedules them."""
    monkeypatch.setattr(turns, "REGROUP_MOST_S", 10.0)


@pytest.mark.usefixtures("long_regroups")
async def test_callers_answered_together_stay_together_when_regrouped() -> None:
    # Answered together, the three come back a few ms apart; the batch
    # after theirs waits for all three (for 0.2 s at most, half of 0.4 s).
    runs = _Timed(0.4)
    batches = Batches(runs, regroup=True)

    await asyncio.gather(*(_caller(batches, n, 0.002 * (n + 1)) for n in range(3)))

    assert runs.batches == [[0, 1, 2], [10, 11, 12]]


async def test_without_regrouping_the_first_back_runs_alone() -> None:
    runs = _Timed(0.1)
    batches = Batches(runs)

    await asyncio.gather(*(_caller(batches, n, 0.002 * (n + 1)) for n in range(3)))

    assert runs.batches == [[0, 1, 2], [10], [11, 12]]


async def test_a_regrouped_batch_does_not_wait_long_for_callers_who_stay_away() -> None:
    # One of three comes back: it runs once half the last batch's time is up.
    runs = _Timed(0.1)
    batches = Batches(runs, regroup=True, patience_s=5)

    await asyncio.gather(
        _caller(batches, 0, 0.001), batches.submit("m", 1), batches.submit("m", 2)
    )

    assert runs.batches == [[0, 1, 2], [10]]
    waited = runs.started[1] - runs.started[0] - 0.1
    assert 0.02 < waited < 5


async def test_a_regrouped_batch_waits_no_longer_than_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # After a batch that ran long (a slow store), the wait is REGROUP_MOST_S.
    monkeypatch.setattr(turns, "REGROUP_MOST_S", 0.01)
    runs = _Timed(0, first=2.0)
    batches = Batches(runs, regroup=True)

    async with asyncio.timeout(2.0 + 0.9):  # not half of 2 s more
        await asyncio.gather(
            _caller(batches, 0, 0.001), batches.submit("m", 1), batches.submit("m", 2)
        )

    assert runs.batches == [[0, 1, 2], [10]]


@pytest.mark.usefixtures("long_regroups")
async def test_a_regrouped_batch_starts_while_its_waiting_items_have_time() -> None:
    # The first batch runs 0.5 s; an item that came 0.05 s into it has
    # 0.55 s of patience left then, and the batch after waits for callers
    # who never come back: half of that, not half of 0.5 s, or it would
    # give up on the item unrun.
    runs = _Timed(0, first=0.5)
    batches = Batches(runs, regroup=True, patience_s=0.6)
    first = [asyncio.ensure_future(batches.submit("m", n)) for n in range(3)]
    await asyncio.sleep(0.05)

    assert await batches.submit("m", 7) == 7
    assert runs.batches == [[0, 1, 2], [7]]
    await asyncio.gather(*first)


@pytest.mark.usefixtures("long_regroups")
async def test_after_a_batch_of_one_the_next_runs_as_soon_as_one_comes() -> None:
    runs = _Timed(0, first=1.0)
    batches = Batches(runs, regroup=True)

    # A wait for more would last 0.5 s; the lone caller's batch runs at once.
    async with asyncio.timeout(1.0 + 0.4):
        await _caller(batches, 0, 0)

    assert runs.batches == [[0], [10]]
