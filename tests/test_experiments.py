"""Experiments over HTTP: CRUD, pages, end_date and the guarded delete."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app.settings import Settings
from tests.helpers import (
    contents,
    database,
    delete,
    get_json,
    lineage,
    make_experiment,
    make_iteration,
    make_project,
    patch_json,
    post_json,
    refused,
    register,
    tick,
    upload,
)


async def test_created_experiment_starts_in_progress(api: TestClient) -> None:
    project_id = await make_project(api)

    response = await api.post(
        f"/experiment/project/{project_id}", json={"name": "baseline"}
    )
    body = await response.json()

    assert response.status == 201
    assert response.headers["Location"] == f"/experiment/{body['experiment_id']}"
    experiment = await get_json(api, response.headers["Location"])
    assert experiment["project_id"] == project_id
    assert experiment["name"] == "baseline"
    assert experiment["status_id"] == 1
    assert experiment["description"] == ""
    assert experiment["end_date"] is None
    assert experiment["updated_date"] is None


async def test_experiment_created_finished_has_an_end_date(api: TestClient) -> None:
    project_id = await make_project(api)

    body = await post_json(
        api, f"/experiment/project/{project_id}", {"name": "e", "status_id": 3}
    )

    experiment = await get_json(api, f"/experiment/{body['experiment_id']}")
    assert experiment["status_id"] == 3
    assert experiment["end_date"] == experiment["created_date"]


async def test_experiment_list_pages_in_id_order(api: TestClient) -> None:
    project_id = await make_project(api)
    other_project = await make_project(api, "other")
    await make_experiment(api, other_project)
    ids = [await make_experiment(api, project_id, f"e{i}") for i in range(3)]

    page = await get_json(api, f"/experiment/project/{project_id}?limit=2&offset=1")

    assert [e["id"] for e in page["data"]] == ids[1:3]
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 1)


async def test_experiment_list_of_missing_project_is_404(api: TestClient) -> None:
    await refused(api, "GET", "/experiment/project/42", 404, "NOT_FOUND")


async def test_experiment_create_in_missing_project_is_404(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    await refused(
        api, "POST", "/experiment/project/42", 404, "NOT_FOUND", json={"name": "e"}
    )

    assert await database(mongo, settings).experiments.count_documents({}) == 0


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
@pytest.mark.parametrize(
    "raw", ["999", "abc", "0", "9223372036854775808", "18446744073709551616"]
)
async def test_missing_or_malformed_experiment_id_is_404(
    api: TestClient, method: str, raw: str
) -> None:
    await make_experiment(api, await make_project(api))

    await refused(
        api, method, f"/experiment/{raw}", 404, "NOT_FOUND", json={"name": "x"}
    )


@pytest.mark.parametrize("raw", ["abc", "0", "18446744073709551616"])
async def test_malformed_project_id_in_experiment_list_is_404(
    api: TestClient, raw: str
) -> None:
    await refused(api, "GET", f"/experiment/project/{raw}", 404, "NOT_FOUND")
    await refused(
        api, "POST", f"/experiment/project/{raw}", 404, "NOT_FOUND", json={"name": "e"}
    )


async def test_patch_renames_and_moves_updated_date(api: TestClient) -> None:
    experiment_id = await make_experiment(api, await make_project(api))

    await patch_json(api, f"/experiment/{experiment_id}", {"name": "renamed"})
    first = await get_json(api, f"/experiment/{experiment_id}")
    await tick()
    await patch_json(api, f"/experiment/{experiment_id}", {"description": "d"})
    second = await get_json(api, f"/experiment/{experiment_id}")

    assert first["name"] == "renamed"
    assert first["updated_date"] is not None
    assert second["description"] == "d"
    assert second["updated_date"] > first["updated_date"]
    assert second["end_date"] is None


async def test_stopping_sets_end_date_and_reopening_clears_it(
    api: TestClient,
) -> None:
    experiment_id = await make_experiment(api, await make_project(api))
    path = f"/experiment/{experiment_id}"

    await patch_json(api, path, {"status_id": 2})
    stopped = await get_json(api, path)
    await patch_json(api, path, {"status_id": 1})
    reopened = await get_json(api, path)

    assert stopped["status_id"] == 2
    assert stopped["end_date"] is not None
    assert stopped["end_date"] == stopped["updated_date"]
    assert reopened["status_id"] == 1
    assert reopened["end_date"] is None


async def test_finishing_a_stopped_experiment_keeps_its_end_date(
    api: TestClient,
) -> None:
    experiment_id = await make_experiment(api, await make_project(api))
    path = f"/experiment/{experiment_id}"
    await patch_json(api, path, {"status_id": 2})
    stopped = await get_json(api, path)
    await tick()

    await patch_json(api, path, {"status_id": 3})

    finished = await get_json(api, path)
    assert finished["status_id"] == 3
    assert finished["end_date"] == stopped["end_date"]
    assert finished["updated_date"] > stopped["updated_date"]


async def test_setting_the_same_status_leaves_end_date(api: TestClient) -> None:
    experiment_id = await make_experiment(api, await make_project(api))
    path = f"/experiment/{experiment_id}"
    await patch_json(api, path, {"status_id": 3})
    finished = await get_json(api, path)
    await tick()

    await patch_json(api, path, {"status_id": 3})

    assert (await get_json(api, path))["end_date"] == finished["end_date"]


async def test_description_change_leaves_end_date(api: TestClient) -> None:
    experiment_id = await make_experiment(api, await make_project(api))
    path = f"/experiment/{experiment_id}"
    await patch_json(api, path, {"status_id": 2})
    stopped = await get_json(api, path)
    await tick()

    await patch_json(api, path, {"description": "notes"})

    assert (await get_json(api, path))["end_date"] == stopped["end_date"]


async def test_unreferenced_experiment_delete_removes_runs_and_bytes(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    db = database(mongo, settings)
    ids = await lineage(api)
    resource_id = await upload(api, ids["experiment_id"], b"bytes")

    body = await delete(api, f"/experiment/{ids['experiment_id']}")

    assert body == {"message": "OK"}
    await refused(api, "GET", f"/experiment/{ids['experiment_id']}", 404, "NOT_FOUND")
    await refused(api, "GET", f"/iteration/{ids['iteration_id']}", 404, "NOT_FOUND")
    await refused(api, "GET", f"/resource/{resource_id}", 404, "NOT_FOUND")
    for collection in ("iterations", "resources", "fs.files", "fs.chunks"):
        assert await db[collection].count_documents({}) == 0, collection
    assert (await get_json(api, f"/model/{ids['model_id']}"))["id"] == ids["model_id"]


async def test_experiment_delete_leaves_sibling_experiments(api: TestClient) -> None:
    project_id = await make_project(api)
    doomed = await make_experiment(api, project_id, "doomed")
    kept = await make_experiment(api, project_id, "kept")
    kept_iteration = await make_iteration(api, kept)
    kept_resource = await upload(api, kept, b"keep")

    await delete(api, f"/experiment/{doomed}")

    assert (await get_json(api, f"/iteration/{kept_iteration}"))["id"] > 0
    data = await api.get(f"/resource/{kept_resource}/data")
    assert await data.read() == b"keep"


async def test_experiment_delete_is_409_while_a_version_names_its_iteration(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    db = database(mongo, settings)
    ids = await lineage(api)
    await upload(api, ids["experiment_id"], b"unreferenced")
    version_id = await register(api, ids["model_id"], ids["iteration_id"])
    before = await contents(db)

    message = await refused(
        api, "DELETE", f"/experiment/{ids['experiment_id']}", 409, "CONFLICT"
    )

    assert str(ids["experiment_id"]) in message
    assert await contents(db) == before
    assert (await get_json(api, f"/modelversion/{version_id}"))["version"] == 1


async def test_experiment_delete_is_409_while_a_version_names_its_resource(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    db = database(mongo, settings)
    ids = await lineage(api)
    other = await make_experiment(api, ids["project_id"], "artifacts")
    resource_id = await upload(api, other, b"weights")
    await register(api, ids["model_id"], ids["iteration_id"], resource_id=resource_id)
    before = await contents(db)

    await refused(api, "DELETE", f"/experiment/{other}", 409, "CONFLICT")

    assert await contents(db) == before
    data = await api.get(f"/resource/{resource_id}/data")
    assert await data.read() == b"weights"


async def test_experiment_delete_succeeds_once_the_version_is_gone(
    api: TestClient,
) -> None:
    ids = await lineage(api)
    version_id = await register(api, ids["model_id"], ids["iteration_id"])
    await refused(api, "DELETE", f"/experiment/{ids['experiment_id']}", 409, "CONFLICT")

    await delete(api, f"/modelversion/{version_id}")
    await delete(api, f"/experiment/{ids['experiment_id']}")

    await refused(api, "GET", f"/iteration/{ids['iteration_id']}", 404, "NOT_FOUND")
