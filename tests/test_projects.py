"""Projects over HTTP: CRUD, pages, 404s and the cascading delete."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app.settings import Settings
from tests.helpers import (
    call,
    contents,
    database,
    delete,
    get_json,
    lineage,
    make_experiment,
    make_model,
    make_project,
    patch_json,
    post_json,
    refused,
    register,
    tick,
    upload,
)

BEYOND_64_BITS = ["9223372036854775808", "18446744073709551616", "9" * 40]


async def test_created_project_is_readable_at_its_location(api: TestClient) -> None:
    response = await api.post("/project", json={"name": "vision", "description": "d"})
    body = await response.json()

    assert response.status == 201
    assert response.headers["Location"] == f"/project/{body['project_id']}"
    project = await get_json(api, response.headers["Location"])
    assert project["id"] == body["project_id"]
    assert project["name"] == "vision"
    assert project["description"] == "d"
    assert project["created_date"].endswith("Z")
    assert project["updated_date"] is None


async def test_project_description_defaults_to_empty(api: TestClient) -> None:
    project_id = await make_project(api)

    project = await get_json(api, f"/project/{project_id}")

    assert project["description"] == ""


async def test_project_list_pages_in_id_order(api: TestClient) -> None:
    ids = [await make_project(api, f"p{i}") for i in range(5)]

    first = await get_json(api, "/project?limit=2")
    rest = await get_json(api, "/project?limit=2&offset=2")
    beyond = await get_json(api, "/project?offset=10")

    assert [p["id"] for p in first["data"]] == ids[:2]
    assert (first["total"], first["limit"], first["offset"]) == (5, 2, 0)
    assert [p["id"] for p in rest["data"]] == ids[2:4]
    assert rest["offset"] == 2
    assert beyond == {"data": [], "total": 5, "limit": 50, "offset": 10}


async def test_patch_renames_and_moves_updated_date(api: TestClient) -> None:
    project_id = await make_project(api)

    await patch_json(api, f"/project/{project_id}", {"name": "renamed"})
    first = await get_json(api, f"/project/{project_id}")
    await tick()
    await patch_json(api, f"/project/{project_id}", {"description": "later"})
    second = await get_json(api, f"/project/{project_id}")

    assert first["name"] == "renamed"
    assert first["updated_date"] is not None
    assert second["name"] == "renamed"
    assert second["description"] == "later"
    assert second["updated_date"] > first["updated_date"]


async def test_empty_patch_changes_nothing(api: TestClient) -> None:
    project_id = await make_project(api)
    before = await get_json(api, f"/project/{project_id}")

    await patch_json(api, f"/project/{project_id}", {})

    assert await get_json(api, f"/project/{project_id}") == before


async def test_duplicate_project_name_is_409(api: TestClient) -> None:
    await make_project(api, "vision")
    other = await make_project(api, "audio")

    await refused(api, "POST", "/project", 409, "CONFLICT", json={"name": "vision"})
    await refused(
        api, "PATCH", f"/project/{other}", 409, "CONFLICT", json={"name": "vision"}
    )

    assert (await get_json(api, f"/project/{other}"))["name"] == "audio"
    assert (await get_json(api, "/project"))["total"] == 2


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_missing_project_is_404(api: TestClient, method: str) -> None:
    await make_project(api)

    message = await refused(
        api, method, "/project/999", 404, "NOT_FOUND", json={"name": "x"}
    )

    assert "999" in message


@pytest.mark.parametrize("raw", ["abc", "1.5", "-1", "0", "1e3", *BEYOND_64_BITS])
async def test_project_path_id_that_is_no_64_bit_id_is_404(
    api: TestClient, raw: str
) -> None:
    await make_project(api)

    for method in ("GET", "PATCH", "DELETE"):
        await refused(
            api, method, f"/project/{raw}", 404, "NOT_FOUND", json={"name": "x"}
        )

    assert (await get_json(api, "/project"))["total"] == 1


async def test_largest_64_bit_project_id_is_a_plain_404(api: TestClient) -> None:
    message = await refused(
        api, "GET", "/project/9223372036854775807", 404, "NOT_FOUND"
    )

    assert "9223372036854775807" in message


async def test_project_path_id_with_thousands_of_digits_is_404(
    api: TestClient,
) -> None:
    # Python refuses to parse integers this long without a limit override.
    await refused(api, "GET", "/project/" + "7" * 5000, 404, "NOT_FOUND")


async def test_project_path_id_in_non_ascii_digits_is_404(api: TestClient) -> None:
    project_id = await make_project(api)
    fullwidth = "".join(chr(0xFF10 + int(d)) for d in str(project_id))

    await refused(api, "GET", f"/project/{fullwidth}", 404, "NOT_FOUND")


async def test_deleted_project_is_gone(api: TestClient) -> None:
    project_id = await make_project(api)

    body = await delete(api, f"/project/{project_id}")

    assert body == {"message": "OK"}
    await refused(api, "GET", f"/project/{project_id}", 404, "NOT_FOUND")
    await refused(api, "DELETE", f"/project/{project_id}", 404, "NOT_FOUND")
    assert (await get_json(api, "/project"))["total"] == 0


async def _populate(api: TestClient, name: str) -> dict[str, Any]:
    """A project with every kind of record under it, bytes included."""
    ids: dict[str, Any] = dict(await lineage(api, name))
    ids["child_id"] = (
        await post_json(
            api,
            f"/iteration/experiment/{ids['experiment_id']}",
            {"parent_iteration_id": ids["iteration_id"]},
        )
    )["iteration_id"]
    ids["resource_id"] = await upload(api, ids["experiment_id"], b"w" * 300_000)
    ids["version_id"] = await register(
        api, ids["model_id"], ids["iteration_id"], resource_id=ids["resource_id"]
    )
    await patch_json(api, f"/modelversion/{ids['version_id']}", {"stage_id": 3})
    ids["second_experiment_id"] = await make_experiment(api, ids["project_id"], "b")
    ids["second_model_id"] = await make_model(api, ids["project_id"], "other")
    return ids


async def test_project_delete_removes_everything_under_it(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    db = database(mongo, settings)
    ids = await _populate(api, "doomed")
    await db.userpermissions.insert_one(
        {"_id": 1, "user_id": 7, "project_id": ids["project_id"]}
    )
    assert await db["fs.chunks"].count_documents({}) == 2

    await delete(api, f"/project/{ids['project_id']}")

    for collection in (
        "experiments",
        "iterations",
        "resources",
        "models",
        "modelversions",
        "userpermissions",
        "fs.files",
        "fs.chunks",
    ):
        assert await db[collection].count_documents({}) == 0, collection
    model_counters = {"_id": {"$regex": "^modelversion:"}}
    assert await db.version_counters.count_documents(model_counters) == 0
    for path in (
        f"/experiment/{ids['experiment_id']}",
        f"/iteration/{ids['child_id']}",
        f"/resource/{ids['resource_id']}",
        f"/resource/{ids['resource_id']}/data",
        f"/model/{ids['model_id']}",
        f"/modelversion/{ids['version_id']}",
    ):
        await refused(api, "GET", path, 404, "NOT_FOUND")


async def test_project_delete_leaves_other_projects_alone(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    db = database(mongo, settings)
    kept = await _populate(api, "kept")
    doomed = await _populate(api, "doomed")
    doomed_id = doomed["project_id"]
    kept_only = {
        name: [
            doc
            for doc in docs
            if doc.get("project_id") != doomed_id
            and not (name == "projects" and doc["_id"] == doomed_id)
        ]
        for name, docs in (await contents(db)).items()
        if not name.startswith("fs.")
    }

    await delete(api, f"/project/{doomed['project_id']}")

    after = await contents(db)
    assert {name: after[name] for name in kept_only} == kept_only
    data = await api.get(f"/resource/{kept['resource_id']}/data")
    assert await data.read() == b"w" * 300_000
    next_version = await register(api, kept["model_id"], kept["iteration_id"])
    assert (await get_json(api, f"/modelversion/{next_version}"))["version"] == 2


async def test_project_delete_of_missing_project_changes_nothing(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    db = database(mongo, settings)
    await _populate(api, "kept")
    before = await contents(db)

    await call(api, "DELETE", "/project/999", 404)

    assert await contents(db) == before


async def test_head_answers_like_get_without_a_body(api: TestClient) -> None:
    project_id = await make_project(api)

    response = await api.head(f"/project/{project_id}")

    assert response.status == 200
    assert await response.read() == b""
