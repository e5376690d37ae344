"""The client end to end against the app on SecantusDB (real transactions)."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from app.client import ClientError, IterationStatus, Stage, connect, connect_sync

pytestmark = [
    pytest.mark.integration,
]


async def test_training_to_serving_through_the_client(
    real_api: TestClient, tmp_path: Path
) -> None:
    weights = [bytes([n]) * 300_000 for n in (1, 2)]

    async with connect(str(real_api.make_url(""))) as client:
        project_id = await client.create_project("fraud")
        experiment_id = await client.create_experiment(project_id, "sweep")
        model_id = await client.create_model(project_id, "fraud-classifier")
        version_ids = []
        for data in weights:
            async with client.iteration(experiment_id) as run:
                resource_id = await client.create_resource(
                    experiment_id, "weights.bin", data
                )
            version_ids.append(
                await client.create_modelversion(model_id, run.id, resource_id)
            )
        await asyncio.gather(
            *(client.update_modelversion(v, Stage.PRODUCTION) for v in version_ids)
        )

        versions = await client.get_modelversions(model_id)
        live = [v for v in versions if v.stage_id == Stage.PRODUCTION]
        assert len(live) == 1
        assert live[0].resource_id is not None
        digest = await client.download_resource(
            live[0].resource_id, tmp_path / "live.bin"
        )
        runs = await client.get_iterations(experiment_id)
        in_use = await _refusal(client.delete_experiment(experiment_id))
        await client.delete_model(model_id)
        await client.delete_experiment(experiment_id)

    assert [v.version for v in versions] == [1, 2]
    assert sorted(v.stage_id for v in versions) == [Stage.PRODUCTION, Stage.ARCHIVED]
    assert digest == hashlib.sha256((tmp_path / "live.bin").read_bytes()).hexdigest()
    assert (tmp_path / "live.bin").read_bytes() in weights
    assert [r.status_id for r in runs] == [IterationStatus.SUCCEEDED] * 2
    assert (in_use.status, in_use.code) == (409, "CONFLICT")


async def test_concurrent_registrations_through_the_client_number_one_to_n(
    real_api: TestClient,
) -> None:
    async with connect(str(real_api.make_url(""))) as client:
        project_id = await client.create_project("vision")
        experiment_id = await client.create_experiment(project_id, "sweep")
        iteration_id = await client.create_iteration(experiment_id)
        model_id = await client.create_model(project_id, "clf")

        await asyncio.gather(
            *(client.create_modelversion(model_id, iteration_id) for _ in range(12))
        )
        numbers = [v.version async for v in client.iter_modelversions(model_id)]

    assert numbers == list(range(1, 13))


async def test_blocking_client_against_the_real_store(real_api: TestClient) -> None:
    def scenario(url: str) -> tuple[bytes, Stage]:
        with connect_sync(url) as client:
            project_id = client.create_project("vision")
            experiment_id = client.create_experiment(project_id, "sweep")
            model_id = client.create_model(project_id, "clf")
            with client.iteration(experiment_id) as run:
                resource_id = client.create_resource(experiment_id, "w", b"ckpt")
            version_id = client.create_modelversion(model_id, run.id, resource_id)
            client.update_modelversion(version_id, Stage.STAGING)

            sink = io.BytesIO()
            client.download_resource(resource_id, sink)
            version = client.get_modelversion(version_id)
            assert version is not None
            return sink.getvalue(), version.stage_id

    data, stage = await asyncio.to_thread(scenario, str(real_api.make_url("")))

    assert (data, stage) == (b"ckpt", Stage.STAGING)


async def _refusal(call: object) -> ClientError:
    with pytest.raises(ClientError) as caught:
        await call  # type: ignore[misc]
    return caught.value
