"""Registered models over HTTP: CRUD, pages, unique names and the delete
that takes the versions and leaves the artifacts (SPEC 2.4, 2.5)."""

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
    make_model,
    make_project,
    patch_json,
    post_json,
    refused,
    register,
    tick,
    upload,
)


async def test_created_model_is_readable_at_its_location(api: TestClient) -> None:
    project_id = await make_project(api)

    response = await api.post(
        f"/model/project/{project_id}",
        json={"name": "fraud-classifier", "description": "gbm"},
    )
    body = await response.json()

    assert response.status == 201
    assert set(body) == {"model_id"}
    assert response.headers["Location"] == f"/model/{body['model_id']}"
    model = await get_json(api, response.headers["Location"])
    assert model == {
        "id": body["model_id"],
        "project_id": project_id,
        "name": "fraud-classifier",
        "description": "gbm",
        "created_date": model["created_date"],
        "updated_date": None,
        "revision": 1,
    }


async def test_model_list_pages_in_id_order(api: TestClient) -> None:
    project_id = await make_project(api)
    await make_model(api, await make_project(api, "other"), "elsewhere")
    ids = [await make_model(api, project_id, f"m{i}") for i in range(5)]

    first = await get_json(api, f"/model/project/{project_id}?limit=2")
    middle = await get_json(api, f"/model/project/{project_id}?limit=2&offset=2")
    tail = await get_json(api, f"/model/project/{project_id}?offset=4")

    assert [m["id"] for m in first["data"]] == ids[:2]
    assert [m["id"] for m in middle["data"]] == ids[2:4]
    assert [m["id"] for m in tail["data"]] == ids[4:]
    assert first["total"] == middle["total"] == tail["total"] == 5
    assert (tail["limit"], tail["offset"]) == (50, 4)


async def test_model_list_of_project_without_models_is_empty(
    api: TestClient,
) -> None:
    project_id = await make_project(api)

    page = await get_json(api, f"/model/project/{project_id}")

    assert page == {"data": [], "total": 0, "limit": 50, "offset": 0}


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_models_of_missing_project_are_404(api: TestClient, method: str) -> None:
    await refused(
        api, method, "/model/project/42", 404, "NOT_FOUND", json={"name": "m"}
    )


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
@pytest.mark.parametrize(
    "raw", ["999", "m1", "0", "9223372036854775808", "18446744073709551616"]
)
async def test_missing_or_malformed_model_id_is_404(
    api: TestClient, method: str, raw: str
) -> None:
    await lineage(api)

    await refused(api, method, f"/model/{raw}", 404, "NOT_FOUND", json={})


async def test_updated_date_is_null_until_the_first_change_then_moves(
    api: TestClient,
) -> None:
    model_id = await make_model(api, await make_project(api))
    created = await get_json(api, f"/model/{model_id}")

    await patch_json(api, f"/model/{model_id}", {"description": "first"})
    first = await get_json(api, f"/model/{model_id}")
    await tick()
    await patch_json(api, f"/model/{model_id}", {"name": "renamed"})
    second = await get_json(api, f"/model/{model_id}")

    assert created["updated_date"] is None
    assert first["updated_date"] is not None
    assert first["updated_date"] >= first["created_date"]
    assert second["updated_date"] > first["updated_date"]
    assert (second["name"], second["description"]) == ("renamed", "first")


async def test_patch_answers_updated(api: TestClient) -> None:
    model_id = await make_model(api, await make_project(api))

    body = await patch_json(api, f"/model/{model_id}", {"name": "x"})

    assert body == {"message": "UPDATED"}


async def test_duplicate_model_name_in_a_project_is_409(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    project_id = await make_project(api)
    model_id = await make_model(api, project_id, "clf")
    before = await contents(database(mongo, settings))

    message = await refused(
        api,
        "POST",
        f"/model/project/{project_id}",
        409,
        "CONFLICT",
        json={"name": "clf"},
    )

    assert "clf" in message
    assert await contents(database(mongo, settings)) == before
    page = await get_json(api, f"/model/project/{project_id}")
    assert [m["id"] for m in page["data"]] == [model_id]


async def test_name_clash_is_checked_after_trimming(api: TestClient) -> None:
    project_id = await make_project(api)
    await make_model(api, project_id, "clf")

    await refused(
        api,
        "POST",
        f"/model/project/{project_id}",
        409,
        "CONFLICT",
        json={"name": "  clf\t"},
    )


async def test_rename_onto_a_taken_name_is_409_and_keeps_the_name(
    api: TestClient,
) -> None:
    project_id = await make_project(api)
    await make_model(api, project_id, "clf")
    other = await make_model(api, project_id, "reg")

    await refused(
        api, "PATCH", f"/model/{other}", 409, "CONFLICT", json={"name": "clf"}
    )

    model = await get_json(api, f"/model/{other}")
    assert model["name"] == "reg"
    assert model["updated_date"] is None


async def test_rename_to_its_own_name_is_fine(api: TestClient) -> None:
    model_id = await make_model(api, await make_project(api), "clf")

    await patch_json(api, f"/model/{model_id}", {"name": "clf"})

    assert (await get_json(api, f"/model/{model_id}"))["name"] == "clf"


async def test_same_name_in_another_project_is_fine(api: TestClient) -> None:
    first = await make_project(api, "vision")
    second = await make_project(api, "audio")
    renamed = await make_model(api, second, "other")
    await make_model(api, first, "clf")

    created = await make_model(api, second, "clf2")
    await patch_json(api, f"/model/{created}", {"name": "clf"})
    again = await post_json(api, f"/model/project/{first}", {"name": "reg"})
    await patch_json(api, f"/model/{renamed}", {"name": "reg"})

    assert (await get_json(api, f"/model/{created}"))["name"] == "clf"
    assert (await get_json(api, f"/model/{renamed}"))["name"] == "reg"
    assert again["model_id"] > 0


async def test_name_freed_by_a_delete_can_be_taken_again(api: TestClient) -> None:
    project_id = await make_project(api)
    model_id = await make_model(api, project_id, "clf")
    await delete(api, f"/model/{model_id}")

    new_id = await make_model(api, project_id, "clf")

    assert new_id != model_id
    assert (await get_json(api, f"/model/{new_id}"))["name"] == "clf"


async def test_model_delete_removes_versions_and_leaves_resources(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    db = database(mongo, settings)
    ids = await lineage(api)
    resource_id = await upload(api, ids["experiment_id"], b"weights")
    versions = [
        await register(
            api, ids["model_id"], ids["iteration_id"], resource_id=resource_id
        )
        for _ in range(3)
    ]
    await patch_json(api, f"/modelversion/{versions[0]}", {"stage_id": 3})
    kept_model = await make_model(api, ids["project_id"], "kept")
    kept_version = await register(api, kept_model, ids["iteration_id"])

    body = await delete(api, f"/model/{ids['model_id']}")

    assert body == {"message": "OK"}
    await refused(api, "GET", f"/model/{ids['model_id']}", 404, "NOT_FOUND")
    for version_id in versions:
        await refused(api, "GET", f"/modelversion/{version_id}", 404, "NOT_FOUND")
    await refused(
        api, "GET", f"/modelversion/model/{ids['model_id']}", 404, "NOT_FOUND"
    )
    assert await db.modelversions.count_documents({}) == 1
    assert (await get_json(api, f"/modelversion/{kept_version}"))["version"] == 1
    assert (await get_json(api, f"/resource/{resource_id}"))["id"] == resource_id
    data = await api.get(f"/resource/{resource_id}/data")
    assert await data.read() == b"weights"
    assert (await get_json(api, f"/iteration/{ids['iteration_id']}"))["id"] > 0


async def test_artifact_of_a_deleted_model_can_then_be_deleted(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    ids = await lineage(api)
    resource_id = await upload(api, ids["experiment_id"], b"weights")
    await register(api, ids["model_id"], ids["iteration_id"], resource_id=resource_id)
    await delete(api, f"/model/{ids['model_id']}")

    await delete(api, f"/resource/{resource_id}")

    assert await database(mongo, settings)["fs.files"].count_documents({}) == 0


async def test_registering_on_a_deleted_model_is_404(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    ids = await lineage(api)
    await delete(api, f"/model/{ids['model_id']}")

    await refused(
        api,
        "POST",
        f"/modelversion/model/{ids['model_id']}",
        404,
        "NOT_FOUND",
        json={"iteration_id": ids["iteration_id"]},
    )

    assert await database(mongo, settings).modelversions.count_documents({}) == 0
