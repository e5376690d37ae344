"""Small steps the tests repeat: creating records over the API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from app.server import create_app
from app.settings import Settings


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


# Reading answers and the database ---------------------------------------


async def call(
    api: TestClient, method: str, path: str, status: int, **kwargs: Any
) -> Any:
    """Send a request, check its status and return its JSON body."""
    response = await api.request(method, path, **kwargs)
    payload = await response.json()
    assert response.status == status, payload
    return payload


async def get_json(api: TestClient, path: str, status: int = 200) -> Any:
    return await call(api, "GET", path, status)


async def patch_json(api: TestClient, path: str, body: Any, status: int = 200) -> Any:
    return await call(api, "PATCH", path, status, json=body)


async def delete(api: TestClient, path: str, status: int = 200) -> Any:
    return await call(api, "DELETE", path, status)


async def refused(
    api: TestClient, method: str, path: str, status: int, code: str, **kwargs: Any
) -> str:
    """Send a request the API must refuse; return the envelope's message."""
    payload = await call(api, method, path, status, **kwargs)
    assert set(payload) == {"code", "message"}, payload
    assert payload["code"] == code, payload
    assert isinstance(payload["message"], str) and payload["message"]
    return str(payload["message"])


def database(mongo: Any, settings: Settings) -> Any:
    """The mock database the app under test writes to."""
    return mongo[settings.db_name]


async def contents(db: Any) -> dict[str, list[Any]]:
    """Every document of every collection but the counters, by _id.

    Counters are left out: an id drawn by a refused request is a harmless
    gap, the version counters are checked through version numbers, and a
    refused change may bump a listing stamp, which only costs a reread.
    """
    result = {}
    for name in sorted(await db.list_collection_names()):
        if name in ("counters", "version_counters", "listings"):
            continue
        docs = await db[name].find({}).to_list(length=None)
        result[name] = sorted(docs, key=lambda doc: str(doc["_id"]))
    return result


async def tick() -> None:
    """Let the clock move past the millisecond the last write recorded."""
    await asyncio.sleep(0.003)


@contextlib.asynccontextmanager
async def serving(settings: Settings, mongo: Any) -> AsyncIterator[TestClient]:
    """The app factory with other settings, on the same mock database."""
    app = create_app(settings, client=mongo)
    async with TestClient(TestServer(app)) as client:
        yield client
