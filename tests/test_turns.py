"""Turn-taking on a key within one process (app.store.turns)."""

from __future__ import annotations

import asyncio

from app.store.turns import Turns


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
