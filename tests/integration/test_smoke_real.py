"""The registry's everyday path on real storage, with and without transactions.

Register two checkpoints with their artifact, promote, roll back, and read
the production version back, as a training script and a server would.
"""

from __future__ import annotations

import os

import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import lineage, register, upload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PRODUCTION = 3
ARCHIVED = 4


async def _stage(api: TestClient, version_id: int, stage_id: int) -> None:
    response = await api.patch(
        f"/modelversion/{version_id}", json={"stage_id": stage_id}
    )
    assert response.status == 200, await response.json()


async def _stages(api: TestClient, model_id: int) -> dict[int, int]:
    response = await api.get(f"/modelversion/model/{model_id}")
    body = await response.json()
    assert response.status == 200, body
    return {v["version"]: v["stage_id"] for v in body["data"]}


async def _register_promote_and_roll_back(api: TestClient) -> None:
    ids = await lineage(api)
    data = os.urandom(600 * 1024)
    resource_id = await upload(api, ids["experiment_id"], data)
    first, second = [
        await register(
            api, ids["model_id"], ids["iteration_id"], resource_id=resource_id
        )
        for _ in range(2)
    ]

    await _stage(api, first, PRODUCTION)
    await _stage(api, second, PRODUCTION)
    promoted = await _stages(api, ids["model_id"])
    await _stage(api, first, PRODUCTION)
    rolled_back = await _stages(api, ids["model_id"])

    assert promoted == {1: ARCHIVED, 2: PRODUCTION}
    assert rolled_back == {1: PRODUCTION, 2: ARCHIVED}
    version = await (await api.get(f"/modelversion/{first}")).json()
    assert version["resource_id"] == resource_id
    download = await api.get(f"/resource/{resource_id}/data")
    assert download.status == 200
    assert await download.read() == data


async def test_register_promote_and_roll_back_with_transactions(
    real_api: TestClient,
) -> None:
    await _register_promote_and_roll_back(real_api)


async def test_register_promote_and_roll_back_without_transactions(
    standalone_api: TestClient,
) -> None:
    await _register_promote_and_roll_back(standalone_api)
