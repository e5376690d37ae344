"""The store's reads and writes of several collections, and the
transaction runner, on the unit-test store (no transactions, no joins).

The same operations against a real server, in one command each, are in
tests/integration/test_store_real.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

from app.errors import DatabaseUnavailable
from app.mongo import ServerFeatures
from app.services.history import move_version_counters
from app.store.database import Session, Store, _counted, retry_pause
from app.store.errors import Contention, DuplicateKey
from app.store.listings import STAMPS, Pages
from app.store.ops import Delete, Insert, Ref, Related, Update

PAGE: dict[str, Any] = {"sort": "_id", "limit": 2, "offset": 1}


@pytest.fixture
async def store(mongo: Any) -> Store:
    db = mongo["store_tests"]
    await db.counters.insert_one({"_id": "modelversion:7", "events": 2})
    await db.models.insert_one({"_id": 7, "project_id": 1})
    await db.modelversions.insert_many(
        [{"_id": n, "model_id": 7, "stage_id": 3 if n == 2 else 1} for n in (1, 2, 3)]
    )
    return Store(db, features=ServerFeatures(), retries=3)


async def test_read_with_reads_the_related_documents_of_a_match(store: Store) -> None:
    found = await store.read_with(
        "modelversions",
        {"_id": 3},
        {
            "counter": Related(
                "counters", {"_id": Ref("model_id", prefix="modelversion:")}
            ),
            "production": Related(
                "modelversions",
                {"model_id": Ref("model_id"), "stage_id": 3},
                projection={"_id": 1},
                many=True,
            ),
            "model": Related("models", {"_id": 8}),
        },
    )

    assert found is not None
    doc, related = found
    assert doc["_id"] == 3
    assert related == {
        "counter": {"_id": "modelversion:7", "events": 2},
        "production": [{"_id": 2}],
        "model": None,
    }


async def test_read_with_answers_none_without_a_match(store: Store) -> None:
    related = {"model": Related("models", {"_id": Ref("model_id")})}

    assert await store.read_with("modelversions", {"_id": 99}, related) is None


async def test_page_under_reads_the_parent_with_the_page(store: Store) -> None:
    found, docs, total = await store.page_under(
        "models", 7, {"project_id": 1}, "modelversions", {"model_id": 7}, **PAGE
    )

    assert found == {"_id": 7, "project_id": 1}
    assert ([doc["_id"] for doc in docs], total) == ([2, 3], 3)


async def test_page_under_a_missing_parent_finds_no_parent(store: Store) -> None:
    found, _, total = await store.page_under(
        "models", 8, {"project_id": 1}, "modelversions", {"model_id": 8}, **PAGE
    )

    assert (found, total) == (None, 0)


async def test_writes_stop_at_a_required_write_that_matches_nothing(
    store: Store,
) -> None:
    writes = [
        Update("counters", {"_id": "modelversion:7"}, {"$inc": {"events": 1}}),
        Delete("modelversions", {"_id": 99}, required=True),
        Insert("modelversions", [{"_id": 4, "model_id": 7}]),
    ]

    with pytest.raises(Contention):
        await store.write(writes, session=None)

    # Without a transaction the step before stays; the one after never ran.
    assert (await store.get("counters", "modelversion:7") or {})["events"] == 3
    assert await store.get("modelversions", 4) is None


async def test_a_body_that_met_contention_runs_again(store: Store) -> None:
    runs = 0

    async def body(session: Session) -> int:
        nonlocal runs
        runs += 1
        # The first run expects a value that another writer moved on.
        expected = 1 if runs == 1 else 2
        await store.write(
            [
                Update(
                    "counters",
                    {"_id": "modelversion:7", "events": expected},
                    {"$inc": {"events": 1}},
                    required=True,
                )
            ],
            session=session,
        )
        return runs

    assert await store.transaction(body) == 2
    assert (await store.get("counters", "modelversion:7") or {})["events"] == 3


async def test_a_body_that_keeps_meeting_contention_gives_up_with_503(
    store: Store,
) -> None:
    runs = 0

    async def body(session: Session) -> None:
        nonlocal runs
        runs += 1
        await store.write([Delete("models", {"_id": 99}, required=True)], session=None)

    with pytest.raises(DatabaseUnavailable):
        await store.transaction(body)
    assert runs == store.retries


async def test_a_rerun_after_a_transient_error_waits_a_jittered_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    async def body(session: Any) -> str:
        return "done"

    monkeypatch.setattr("app.store.database.asyncio.sleep", sleep)
    monkeypatch.setattr("app.store.database.random.random", lambda: 1.0)
    counted = _counted(body)

    results = [await counted(None) for _ in range(4)]

    assert results == ["done"] * 4
    # The first run does not wait; each rerun waits longer, up to the cap.
    assert pauses == [retry_pause(1), retry_pause(2), retry_pause(3)]
    assert pauses == sorted(pauses) and pauses[0] > 0
    assert retry_pause(100) == 0.5


async def test_version_counters_kept_among_id_counters_move_on_startup(
    store: Store,
) -> None:
    # Where data written before version counters had their own collection
    # keeps them (the fixture's counter is one).
    await store.db.version_counters.insert_one({"_id": "modelversion:9", "seq": 4})
    await store.db.counters.insert_one({"_id": "modelversion:9", "seq": 1})
    await store.seed_id_counters()

    assert await move_version_counters(store) == 2
    assert await move_version_counters(store) == 0  # a second server: nothing

    assert await store.db.counters.find_one({"_id": "modelversion:7"}) is None
    moved = await store.db.version_counters.find_one({"_id": "modelversion:7"})
    assert moved == {"_id": "modelversion:7", "events": 2}
    # A counter already there is the newer one and is kept.
    kept = await store.db.version_counters.find_one({"_id": "modelversion:9"})
    assert kept == {"_id": "modelversion:9", "seq": 4}
    assert await store.next_id("models") == 1


async def test_a_bump_writes_an_existing_counter_only(store: Store) -> None:
    assert await store.bump("counters", "modelversion:7", field="guard")
    assert not await store.bump("counters", "modelversion:8", field="guard")

    counter = await store.db.counters.find_one({"_id": "modelversion:7"})
    assert counter["guard"] == 1
    assert await store.db.counters.find_one({"_id": "modelversion:8"}) is None


# Kept pages (app.store.listings) ---------------------------------------------

LISTED_PAGE: dict[str, Any] = {"sort": "_id", "limit": 10, "offset": 0}
MODELS_OF_2 = ("projects", 2, {"_id": 1}, "models", {"project_id": 2})


async def _listed(store: Store) -> tuple[list[int], int]:
    _, docs, total = await store.page_under(*MODELS_OF_2, **LISTED_PAGE)
    return [doc["_id"] for doc in docs], total


@pytest.fixture
async def listed(store: Store) -> Store:
    await store.db.projects.insert_one({"_id": 2})
    await store.db.models.insert_many([{"_id": n, "project_id": 2} for n in (1, 2)])
    return store


async def test_a_page_asked_for_again_is_kept_until_its_collection_changes(
    listed: Store,
) -> None:
    assert await _listed(listed) == ([1, 2], 2)  # asked once: not kept
    await listed.db.models.insert_one({"_id": 3, "project_id": 2})  # unseen
    assert await _listed(listed) == ([1, 2, 3], 3)  # kept from here

    await listed.db.models.insert_one({"_id": 4, "project_id": 2})  # unseen
    assert await _listed(listed) == ([1, 2, 3], 3)

    await listed.insert("models", {"_id": 5, "project_id": 2})
    assert await _listed(listed) == ([1, 2, 3, 4, 5], 5)


async def test_a_change_in_a_transaction_marks_its_collections_even_if_it_fails(
    listed: Store,
) -> None:
    await _listed(listed)
    await _listed(listed)

    async def fails(session: Session) -> None:
        await listed.insert("models", {"_id": 3, "project_id": 2}, session=session)
        raise RuntimeError("the step after the insert failed")

    with pytest.raises(RuntimeError):
        await listed.transaction(fails)

    assert await _listed(listed) == ([1, 2, 3], 3)


async def test_a_change_to_the_parent_collection_renews_the_page(
    listed: Store,
) -> None:
    await _listed(listed)
    await _listed(listed)

    await listed.delete("projects", {"_id": 2})

    found, _, _ = await listed.page_under(*MODELS_OF_2, **LISTED_PAGE)
    assert found is None


async def test_a_kept_page_is_renewed_once_it_is_old(listed: Store) -> None:
    listed.pages.max_age_s = 0.0
    await _listed(listed)
    await _listed(listed)

    await listed.db.models.insert_one({"_id": 3, "project_id": 2})  # unseen

    assert await _listed(listed) == ([1, 2, 3], 3)


async def test_pages_of_versions_are_never_kept(store: Store) -> None:
    args = ("models", 7, {"project_id": 1}, "modelversions", {"model_id": 7})
    for _ in range(3):
        await store.page_under(*args, **LISTED_PAGE)

    await store.db.modelversions.insert_one({"_id": 4, "model_id": 7})  # unseen

    _, docs, total = await store.page_under(*args, **LISTED_PAGE)
    assert (len(docs), total) == (4, 4)


async def test_a_duplicate_key_among_stepwise_inserts_is_a_duplicate_key(
    store: Store,
) -> None:
    # insert_many reports it as a bulk write error, not a duplicate key.
    with pytest.raises(DuplicateKey):
        await store.write([Insert("models", [{"_id": 7}])], session=None)


class _Draws:
    """The size of every draw on a counter from now on, each letting other
    callers run before it goes to the database; ``fail`` fails the next."""

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.fail: Exception | None = None


@pytest.fixture
def draws(store: Store, monkeypatch: pytest.MonkeyPatch) -> _Draws:
    seen = _Draws()
    draw = Store._draw

    async def counted(self: Store, counter: str, count: int) -> Any:
        seen.counts.append(count)
        await asyncio.sleep(0)
        failure, seen.fail = seen.fail, None
        if failure is not None:
            raise failure
        return await draw(self, counter, count)

    monkeypatch.setattr(Store, "_draw", counted)
    return seen


async def test_ids_drawn_together_are_drawn_in_one_step_and_never_shared(
    store: Store, draws: _Draws
) -> None:
    await store.seed_id_counters()

    drawn = await asyncio.gather(*(store.next_ids("models", n) for n in (1, 2, 1, 3)))

    assert sorted(i for ids in drawn for i in ids) == list(range(1, 8))
    assert [len(ids) for ids in drawn] == [1, 2, 1, 3]
    assert draws.counts == [7]


async def test_ids_drawn_ahead_come_a_block_at_a_time_and_are_never_shared(
    store: Store, draws: _Draws
) -> None:
    await store.seed_id_counters()
    store = Store(store.db, features=ServerFeatures(), drawn_ahead={"models": 4})

    drawn = await asyncio.gather(*(store.next_ids("models", n) for n in (1, 2, 3)))
    drawn.append(await store.next_ids("models", 6))  # more than a block
    drawn.append(await store.next_ids("models", 1))

    taken = [i for ids in drawn for i in ids]
    assert [len(ids) for ids in drawn] == [1, 2, 3, 6, 1]
    assert sorted(taken) == taken == list(range(1, 14))
    assert draws.counts == [4, 4, 6]  # one id, 14, still in hand
    assert (await store.next_ids("models", 1)) == [14]
    assert draws.counts == [4, 4, 6]
    assert (await store.next_ids("models", 2)) == [15, 16]
    assert draws.counts == [4, 4, 6, 4]


async def test_a_failed_draw_ahead_fails_every_caller_waiting_at_once(
    store: Store, draws: _Draws
) -> None:
    await store.seed_id_counters()
    store = Store(store.db, features=ServerFeatures(), drawn_ahead={"models": 4})
    draws.fail = DatabaseUnavailable("the database is unreachable")

    failed = await asyncio.gather(
        *(store.next_ids("models", 1) for _ in range(3)), return_exceptions=True
    )

    assert [type(answer) for answer in failed] == [DatabaseUnavailable] * 3
    assert draws.counts == [4]  # one draw for the three, not one each in turn
    drawn = await asyncio.gather(*(store.next_ids("models", 1) for _ in range(3)))
    assert [ids[0] for ids in drawn] == [1, 2, 3]
    assert draws.counts == [4, 4]


async def test_a_change_whose_stamp_cannot_be_bumped_renews_this_process_pages(
    listed: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _listed(listed)
    await _listed(listed)
    stamps = listed.db[STAMPS]

    async def refused(*args: Any, **kwargs: Any) -> Any:
        raise AutoReconnect("the primary stepped down")

    monkeypatch.setattr(type(stamps), "update_one", refused)
    await listed.insert("models", {"_id": 3, "project_id": 2})
    monkeypatch.undo()

    assert await _listed(listed) == ([1, 2, 3], 3)


def test_kept_pages_are_bounded_by_their_size() -> None:
    pages = Pages(max_bytes=10_000)
    big = [{"_id": n, "blob": "x" * 1000} for n in range(4)]
    for n in range(5):
        pages.put(("page", n), (0,), (None, big, 4))

    assert len(pages) == 2  # the oldest went first
    assert pages.get(("page", 4), (0,)) is not None
    assert pages.get(("page", 0), (0,)) is None
