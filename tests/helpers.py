"""Small steps the tests repeat: creating records over the API."""

from __future__ import annotations

from typing import Any

from aiohttp import FormData
from aiohttp.test_utils import TestClient


async def post_json(api: TestClient, path: str, body: Any, status: int = 201) -> Any:
    response = await api.post(path, json=body)
    payload = await response.json()
    assert response.status == status, payload
    return payload


async def make_project(api: TestClient, name: str = "vision") -> int:
    return int((await post_json(api, "/project", {"name": name}))["project_id"])


async def make_experiment(api: TestClient, project_id: int, name: str = "exp") -> int:
    body = await post_json(api, f"/experiment/project/{project_id}", {"name": name})
    return int(body["experiment_id"])


async def make_iteration(api: TestClient, experiment_id: int) -> int:
    body = await post_json(api, f"/iteration/experiment/{experiment_id}", {})
    return int(body["iteration_id"])


async def make_model(api: TestClient, project_id: int, name: str = "clf") -> int:
    body = await post_json(api, f"/model/project/{project_id}", {"name": name})
    return int(body["model_id"])


async def register(
    api: TestClient, model_id: int, iteration_id: int, **extra: Any
) -> int:
    body = await post_json(
        api,
        f"/modelversion/model/{model_id}",
        {"iteration_id": iteration_id, **extra},
    )
    return int(body["modelversion_id"])


async def upload(
    api: TestClient, experiment_id: int, data: bytes, name: str = "weights"
) -> int:
    form = FormData()
    form.add_field("name", name)
    form.add_field("file", data, filename="model.bin")
    response = await api.post(f"/resource/experiment/{experiment_id}", data=form)
    payload = await response.json()
    assert response.status == 201, payload
    return int(payload["resource_id"])


async def lineage(api: TestClient, project: str = "vision") -> dict[str, int]:
    """A project with an experiment, an iteration and a model."""
    project_id = await make_project(api, project)
    experiment_id = await make_experiment(api, project_id)
    return {
        "project_id": project_id,
        "experiment_id": experiment_id,
        "iteration_id": await make_iteration(api, experiment_id),
        "model_id": await make_model(api, project_id),
    }
