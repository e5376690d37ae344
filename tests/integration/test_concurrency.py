"""Version numbers and the single PRODUCTION version under real concurrency.

Requests run side by side against a SecantusDB server with transactions and
real write conflicts (SPEC 2.1 and 2.2).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import keys
from app.metrics import TRANSACTION_RETRIES
from tests.helpers import (
    lineage,
    make_experiment,
    make_iteration,
    make_model,
    make_project,
    register,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PRODUCTION = 3
ARCHIVED = 4


async def _post_version(api: TestClient, model_id: int, iteration_id: int) -> Any:
    response = await api.post(
        f"/modelversion/model/{model_id}", json={"iteration_id": iteration_id}
    )
    return response.status, await response.json()


async def _versions(api: TestClient, model_id: int) -> list[dict[str, Any]]:
    response = await api.get(f"/modelversion/model/{model_id}?limit=200")
    body = await response.json()
    assert response.status == 200, body
    assert body["total"] == len(body["data"])
    return list(body["data"])


async def _promote(api: TestClient, version_id: int) -> int:
    response = await api.patch(
        f"/modelversion/{version_id}", json={"stage_id": PRODUCTION}
    )
    await response.read()
    return response.status


def _stages(versions: list[dict[str, Any]]) -> list[int]:
    return sorted(v["stage_id"] for v in versions)


async def _stored_numbers(api: TestClient, model_id: int) -> list[int]:
    """Version numbers as the database holds them, bypassing the API."""
    db = api.app[keys.MONGO_CLIENT][api.app[keys.SETTINGS].db_name]
    cursor = db.modelversions.find({"model_id": model_id}, {"version": 1})
    return sorted(doc["version"] for doc in await cursor.to_list(length=None))


async def test_sixty_four_concurrent_registrations_number_one_to_64(
    real_api: TestClient,
) -> None:
    ids = await lineage(real_api)

    results = await asyncio.gather(
        *(
            _post_version(real_api, ids["model_id"], ids["iteration_id"])
            for _ in range(64)
        )
    )

    assert [status for status, _ in results] == [201] * 64, results
    listed = await _versions(real_api, ids["model_id"])
    assert [v["version"] for v in listed] == list(range(1, 65))
    each = await asyncio.gather(
        *(
            real_api.get(f"/modelversion/{body['modelversion_id']}")
            for _, body in results
        )
    )
    numbers = [(await response.json())["version"] for response in each]
    assert sorted(numbers) == list(range(1, 65))
    assert await _stored_numbers(real_api, ids["model_id"]) == list(range(1, 65))


async def test_racing_promotions_leave_one_production_version_every_round(
    real_api: TestClient,
) -> None:
    ids = await lineage(real_api)
    version_ids = [
        await register(real_api, ids["model_id"], ids["iteration_id"])
        for _ in range(16)
    ]

    for round_ in range(5):
        statuses = await asyncio.gather(
            *(_promote(real_api, version_id) for version_id in version_ids)
        )

        assert statuses == [200] * 16, (round_, statuses)
        stages = _stages(await _versions(real_api, ids["model_id"]))
        assert stages == [PRODUCTION] + [ARCHIVED] * 15, (round_, stages)


async def test_reader_never_sees_two_production_versions_during_promotions(
    real_api: TestClient,
) -> None:
    ids = await lineage(real_api)
    version_ids = [
        await register(real_api, ids["model_id"], ids["iteration_id"]) for _ in range(8)
    ]
    promoting = True
    seen: list[int] = []

    async def read_until_done() -> None:
        for _ in range(500):
            versions = await _versions(real_api, ids["model_id"])
            seen.append(_stages(versions).count(PRODUCTION))
            if not promoting:
                return

    async def promote_in_rounds() -> list[int]:
        nonlocal promoting
        statuses: list[int] = []
        for _ in range(4):
            statuses += await asyncio.gather(
                *(_promote(real_api, version_id) for version_id in version_ids)
            )
        promoting = False
        return statuses

    _, statuses = await asyncio.gather(read_until_done(), promote_in_rounds())

    assert statuses == [200] * 32
    assert 1 in seen, "no read overlapped the promotions"
    assert max(seen) == 1, seen


async def test_refused_registration_consumes_no_version_number(
    real_api: TestClient,
) -> None:
    ids = await lineage(real_api)
    other_project = await make_project(real_api, "elsewhere")
    foreign_iteration = await make_iteration(
        real_api, await make_experiment(real_api, other_project)
    )
    await register(real_api, ids["model_id"], ids["iteration_id"])

    refused = await _post_version(real_api, ids["model_id"], foreign_iteration)
    await register(real_api, ids["model_id"], ids["iteration_id"])

    assert refused[0] == 422, refused
    assert refused[1]["code"] == "INVALID_PAYLOAD"
    listed = await _versions(real_api, ids["model_id"])
    assert [v["version"] for v in listed] == [1, 2]


async def test_refused_registrations_amid_accepted_ones_leave_no_gap(
    real_api: TestClient,
) -> None:
    ids = await lineage(real_api)
    other_project = await make_project(real_api, "elsewhere")
    foreign_iteration = await make_iteration(
        real_api, await make_experiment(real_api, other_project)
    )
    iterations = [ids["iteration_id"], foreign_iteration] * 16

    results = await asyncio.gather(
        *(_post_version(real_api, ids["model_id"], it) for it in iterations)
    )

    assert [status for status, _ in results] == [201, 422] * 16, results
    listed = await _versions(real_api, ids["model_id"])
    assert [v["version"] for v in listed] == list(range(1, 17))


async def test_deleted_newest_version_number_is_never_reused(
    real_api: TestClient,
) -> None:
    ids = await lineage(real_api)
    for _ in range(3):
        newest = await register(real_api, ids["model_id"], ids["iteration_id"])

    deleted = await real_api.delete(f"/modelversion/{newest}")
    await register(real_api, ids["model_id"], ids["iteration_id"])

    assert deleted.status == 200
    listed = await _versions(real_api, ids["model_id"])
    assert [v["version"] for v in listed] == [1, 2, 4]


async def test_registrations_on_two_models_do_not_interfere(
    real_api: TestClient,
) -> None:
    ids = await lineage(real_api)
    second_model = await make_model(real_api, ids["project_id"], "ranker")
    models = [ids["model_id"], second_model] * 24

    results = await asyncio.gather(
        *(_post_version(real_api, model, ids["iteration_id"]) for model in models)
    )

    assert [status for status, _ in results] == [201] * 48, results
    for model in (ids["model_id"], second_model):
        listed = await _versions(real_api, model)
        assert [v["version"] for v in listed] == list(range(1, 25))
        assert {v["model_id"] for v in listed} == {model}
        assert await _stored_numbers(real_api, model) == list(range(1, 25))


def _retries() -> float:
    """Transactions run again so far in this process, for any cause."""
    return sum(
        sample.value
        for metric in TRANSACTION_RETRIES.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def test_changes_to_one_model_in_one_server_take_turns_and_never_rerun(
    real_api: TestClient,
) -> None:
    # Racing each other, they would conflict on the model's counter in the
    # store and run again; within a server they take turns instead.
    ids = await lineage(real_api)
    before = _retries()

    results = await asyncio.gather(
        *(
            _post_version(real_api, ids["model_id"], ids["iteration_id"])
            for _ in range(16)
        )
    )
    statuses = await asyncio.gather(
        *(_promote(real_api, body["modelversion_id"]) for _, body in results)
    )

    assert [status for status, _ in results] == [201] * 16, results
    assert statuses == [200] * 16
    assert _retries() == before
    stages = _stages(await _versions(real_api, ids["model_id"]))
    assert stages == [PRODUCTION] + [ARCHIVED] * 15
