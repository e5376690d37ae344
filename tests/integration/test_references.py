"""Records a version points at are kept, also while deletions race (SPEC 2.4).

A resource or iteration that a model version names cannot be deleted; a
deletion racing a registration that names the same record ends with one
winner, never with a version pointing at something gone.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import keys
from tests.helpers import lineage, make_iteration, register, upload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RACE_ROUNDS = 16
RACING_REGISTRATIONS = 3
DELETE_DELAY_S = 0.0003


async def _download(api: TestClient, resource_id: int) -> tuple[int, bytes]:
    response = await api.get(f"/resource/{resource_id}/data")
    return response.status, await response.read()


async def _status(api: TestClient, method: str, path: str, **kw: Any) -> int:
    response = await api.request(method, path, **kw)
    await response.read()
    return response.status


async def _versions(api: TestClient, model_id: int) -> list[dict[str, Any]]:
    response = await api.get(f"/modelversion/model/{model_id}?limit=200")
    body = await response.json()
    assert response.status == 200, body
    return list(body["data"])


async def test_resource_of_a_version_is_not_deleted_and_still_downloads(
    real_api: TestClient,
) -> None:
    ids = await lineage(real_api)
    data = os.urandom(300 * 1024)
    resource_id = await upload(real_api, ids["experiment_id"], data)
    await register(
        real_api, ids["model_id"], ids["iteration_id"], resource_id=resource_id
    )

    response = await real_api.delete(f"/resource/{resource_id}")

    assert response.status == 409
    assert (await response.json())["code"] == "CONFLICT"
    assert await _download(real_api, resource_id) == (200, data)


async def test_iteration_of_a_version_is_not_deleted(real_api: TestClient) -> None:
    ids = await lineage(real_api)
    await register(real_api, ids["model_id"], ids["iteration_id"])

    status = await _status(real_api, "DELETE", f"/iteration/{ids['iteration_id']}")

    assert status == 409
    assert await _status(real_api, "GET", f"/iteration/{ids['iteration_id']}") == 200


async def test_deleting_a_model_removes_its_versions_and_keeps_the_resource(
    real_api: TestClient,
) -> None:
    ids = await lineage(real_api)
    data = os.urandom(64 * 1024)
    resource_id = await upload(real_api, ids["experiment_id"], data)
    version_ids = [
        await register(
            real_api, ids["model_id"], ids["iteration_id"], resource_id=resource_id
        )
        for _ in range(3)
    ]

    status = await _status(real_api, "DELETE", f"/model/{ids['model_id']}")

    assert status == 200
    assert await _status(real_api, "GET", f"/model/{ids['model_id']}") == 404
    for version_id in version_ids:
        assert await _status(real_api, "GET", f"/modelversion/{version_id}") == 404
    assert await _status(real_api, "GET", f"/resource/{resource_id}") == 200
    assert await _download(real_api, resource_id) == (200, data)
    # Nothing points at the resource any more, so it can go now.
    assert await _status(real_api, "DELETE", f"/resource/{resource_id}") == 200


async def _race(
    api: TestClient, delete_path: str, model_id: int, body: dict[str, int], round_: int
) -> tuple[int, list[int]]:
    """One DELETE against a few registrations.

    Each round holds the DELETE back a little longer, so that the rounds
    between them cover the delete landing before, amid and after the
    registrations' transactions.
    """

    async def delete() -> int:
        await asyncio.sleep(DELETE_DELAY_S * round_)
        return await _status(api, "DELETE", delete_path)

    registrations = [
        _status(api, "POST", f"/modelversion/model/{model_id}", json=body)
        for _ in range(RACING_REGISTRATIONS)
    ]
    deleted, *created = await asyncio.gather(delete(), *registrations)
    return deleted, created


async def test_resource_delete_racing_registration_has_one_winner(
    real_api: TestClient,
) -> None:
    ids = await lineage(real_api)
    outcomes = []

    for round_ in range(RACE_ROUNDS):
        data = os.urandom(1024)
        resource_id = await upload(real_api, ids["experiment_id"], data)
        body = {"iteration_id": ids["iteration_id"], "resource_id": resource_id}

        deleted, created = await _race(
            real_api, f"/resource/{resource_id}", ids["model_id"], body, round_
        )

        outcomes.append((deleted, created))
        if deleted == 200:
            assert created == [422] * RACING_REGISTRATIONS, outcomes
            assert await _status(real_api, "GET", f"/resource/{resource_id}") == 404
            assert (await _download(real_api, resource_id))[0] == 404
        else:
            assert (deleted, created) == (409, [201] * RACING_REGISTRATIONS), outcomes
            assert await _download(real_api, resource_id) == (200, data)

    for version in await _versions(real_api, ids["model_id"]):
        path = f"/resource/{version['resource_id']}"
        assert await _status(real_api, "GET", path) == 200, (version, outcomes)


async def test_iteration_delete_racing_registration_has_one_winner(
    real_api: TestClient,
) -> None:
    ids = await lineage(real_api)
    outcomes = []

    for round_ in range(RACE_ROUNDS):
        iteration_id = await make_iteration(real_api, ids["experiment_id"])
        body = {"iteration_id": iteration_id}

        deleted, created = await _race(
            real_api, f"/iteration/{iteration_id}", ids["model_id"], body, round_
        )

        outcomes.append((deleted, created))
        remaining = await _status(real_api, "GET", f"/iteration/{iteration_id}")
        if deleted == 200:
            assert created == [422] * RACING_REGISTRATIONS, outcomes
            assert remaining == 404
        else:
            assert (deleted, created) == (409, [201] * RACING_REGISTRATIONS), outcomes
            assert remaining == 200

    for version in await _versions(real_api, ids["model_id"]):
        path = f"/iteration/{version['iteration_id']}"
        assert await _status(real_api, "GET", path) == 200, (version, outcomes)


async def test_model_delete_racing_registrations_leaves_no_orphan_version(
    real_api: TestClient,
) -> None:
    db = real_api.app[keys.MONGO_CLIENT][real_api.app[keys.SETTINGS].db_name]
    outcomes = []

    for round_ in range(RACE_ROUNDS // 2):
        ids = await lineage(real_api, project=f"race-{round_}")
        body = {"iteration_id": ids["iteration_id"]}

        deleted, created = await _race(
            real_api, f"/model/{ids['model_id']}", ids["model_id"], body, round_
        )

        outcomes.append((deleted, created))
        assert deleted == 200, outcomes
        assert set(created) <= {201, 404}, outcomes
        assert await db.models.count_documents({"_id": ids["model_id"]}) == 0
        left = await db.modelversions.count_documents({"model_id": ids["model_id"]})
        assert left == 0, outcomes
