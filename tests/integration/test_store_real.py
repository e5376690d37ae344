"""The store's reads and writes of several collections on a real server.

SecantusDB, like MongoDB 8.0, takes $lookup sub-pipelines and a bulkWrite
across collections; the store then sends a read of related documents as
one aggregate and the writes of a transaction as one command. Each answer
here must be the one the plain steps give (the unit-test store runs only
those, see tests/test_store.py).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.embedded import EmbeddedStore
from app.mongo import ServerFeatures, open_client, server_features
from app.store.database import Session, Store
from app.store.errors import DuplicateKey
from app.store.ops import Insert, Ref, Related, Update

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

_databases = itertools.count(1)


@pytest.fixture
async def db(secantus: EmbeddedStore) -> AsyncIterator[Any]:
    client = open_client(secantus.uri, timeout_ms=5000)
    name = f"store_real_{next(_databases)}"
    db = client[name]
    await db.counters.insert_one({"_id": "modelversion:7", "events": 2})
    await db.models.insert_one({"_id": 7, "project_id": 1})
    await db.modelversions.insert_many(
        [{"_id": n, "model_id": 7, "stage_id": 3 if n == 2 else 1} for n in (1, 2, 3)]
    )
    await db.modelversions.create_index("model_id", name="by_model")
    try:
        yield db
    finally:
        await client.drop_database(name)
        client.close()


@pytest.fixture
async def batched(db: Any) -> Store:
    """The store as the app builds it on this server."""
    features = await server_features(db.client)
    assert features == ServerFeatures(transactions=True, joins=True, bulk_writes=True)
    return Store(db, features=features)


@pytest.fixture
def stepwise(db: Any) -> Store:
    """The same database without joins or bulk writes: one command a step."""
    return Store(db, features=ServerFeatures(transactions=True))


RELATED = {
    "counter": Related("counters", {"_id": Ref("model_id", prefix="modelversion:")}),
    "production": Related(
        "modelversions",
        {"model_id": Ref("model_id"), "stage_id": 3, "_id": {"$ne": 3}},
        projection={"_id": 1},
        many=True,
    ),
    "others": Related(
        "modelversions",
        {"model_id": Ref("model_id"), "_id": {"$ne": 3}},
        projection={"_id": 1},
        many=True,
    ),
    "model": Related("models", {"_id": Ref("model_id")}, projection={"_id": 0}),
    "missing": Related("models", {"_id": 8}),
}


async def test_a_read_with_related_documents_answers_as_its_steps(
    batched: Store, stepwise: Store
) -> None:
    joined = await batched.read_with("modelversions", {"_id": 3}, RELATED)

    assert joined == await stepwise.read_with("modelversions", {"_id": 3}, RELATED)
    assert joined is not None
    assert joined[1] == {
        "counter": {"_id": "modelversion:7", "events": 2},
        "production": [{"_id": 2}],
        "others": [{"_id": 1}, {"_id": 2}],
        "model": {"project_id": 1},
        "missing": None,
    }
    assert await batched.read_with("modelversions", {"_id": 9}, RELATED) is None


@pytest.mark.parametrize(
    ("parent_id", "limit", "offset"), [(7, 2, 1), (7, 0, 0), (7, 5, 9), (8, 2, 0)]
)
async def test_a_page_under_a_parent_answers_as_its_steps(
    batched: Store, stepwise: Store, parent_id: int, limit: int, offset: int
) -> None:
    args = ("models", parent_id, {"project_id": 1}, "modelversions")
    bounds = {"sort": "_id", "limit": limit, "offset": offset}
    query = {"model_id": parent_id}

    answer = await batched.page_under(*args, query, **bounds)

    assert answer == await stepwise.page_under(*args, query, **bounds)


async def test_a_duplicate_key_in_a_bulk_write_is_a_duplicate_key(
    batched: Store,
) -> None:
    async def body(session: Session) -> None:
        await batched.write(
            [
                Update("counters", {"_id": "modelversion:7"}, {"$inc": {"events": 1}}),
                Insert("models", [{"_id": 7}]),
            ],
            session=session,
        )

    with pytest.raises(DuplicateKey):
        await batched.transaction(body)
    assert (await batched.get("counters", "modelversion:7") or {})["events"] == 2


async def test_a_bulk_write_that_met_contention_is_rolled_back_and_runs_again(
    batched: Store,
) -> None:
    runs = 0

    async def body(session: Session) -> None:
        nonlocal runs
        runs += 1
        expected = 1 if runs == 1 else 2
        # The insert comes first: a first run that kept it would make the
        # second one fail on its key.
        await batched.write(
            [
                Insert("models", [{"_id": 70}]),
                Update(
                    "counters",
                    {"_id": "modelversion:7", "events": expected},
                    {"$inc": {"events": 1}},
                    required=True,
                ),
            ],
            session=session,
        )

    await batched.transaction(body)

    assert runs == 2
    assert (await batched.get("counters", "modelversion:7") or {})["events"] == 3


async def test_a_write_conflict_in_a_bulk_write_is_retried_by_the_driver(
    batched: Store,
) -> None:
    first_wrote, second_tried = asyncio.Event(), asyncio.Event()
    bump = [Update("counters", {"_id": "modelversion:7"}, {"$inc": {"events": 1}})]
    second_runs = 0

    async def first(session: Session) -> None:
        await batched.write(bump, session=session)
        first_wrote.set()
        await asyncio.wait_for(second_tried.wait(), 10)

    async def second(session: Session) -> None:
        nonlocal second_runs
        await first_wrote.wait()
        second_runs += 1
        # A read first, as in every body of the app: SecantusDB refuses a
        # bulkWrite that opens a transaction (see Store.write).
        await batched.get("models", 7, session=session)
        try:
            await batched.write(bump, session=session)
        finally:
            second_tried.set()

    await asyncio.gather(batched.transaction(first), batched.transaction(second))

    assert second_runs >= 2
    assert (await batched.get("counters", "modelversion:7") or {})["events"] == 4


async def test_a_change_through_one_process_renews_pages_kept_by_another(
    db: Any, batched: Store
) -> None:
    # Two servers on one database: each keeps its own pages (see
    # app.store.listings) and must see the other's changes at once.
    other = Store(db, features=await server_features(db.client))
    await batched.seed_id_counters()
    await db.projects.insert_one({"_id": 1})
    args = ("projects", 1, {"_id": 1}, "models", {"project_id": 1})
    page = {"sort": "_id", "limit": 10, "offset": 0}
    for _ in range(3):
        kept = await other.page_under(*args, **page)
    assert kept[2] == 1

    async def create(session: Session) -> None:
        await batched.get("projects", 1, session=session)
        await batched.write(
            [Insert("models", [{"_id": 8, "project_id": 1}])], session=session
        )

    await batched.transaction(create)

    _, docs, total = await other.page_under(*args, **page)
    assert ([doc["_id"] for doc in docs], total) == ([7, 8], 2)
