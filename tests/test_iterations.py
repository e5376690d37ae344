"""Iterations over HTTP: CRUD, pages, end_date, parents and the guarded
delete."""

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
)


async def _experiment(api: TestClient) -> int:
    return await make_experiment(api, await make_project(api))


async def test_empty_body_starts_a_running_iteration(api: TestClient) -> None:
    project_id = await make_project(api)
    experiment_id = await make_experiment(api, project_id)

    response = await api.post(f"/iteration/experiment/{experiment_id}", json={})
    body = await response.json()

    assert response.status == 201
    assert response.headers["Location"] == f"/iteration/{body['iteration_id']}"
    iteration = await get_json(api, response.headers["Location"])
    assert iteration["experiment_id"] == experiment_id
    assert iteration["parent_iteration_id"] is None
    assert iteration["status_id"] == 1
    assert iteration["notes"] == ""
    assert iteration["error_message"] == ""
    assert iteration["end_date"] is None
    assert iteration["updated_date"] is None


async def test_iteration_keeps_its_notes(api: TestClient) -> None:
    experiment_id = await _experiment(api)

    body = await post_json(
        api, f"/iteration/experiment/{experiment_id}", {"notes": "lr=0.1\nbs=32"}
    )

    iteration = await get_json(api, f"/iteration/{body['iteration_id']}")
    assert iteration["notes"] == "lr=0.1\nbs=32"


async def test_iteration_list_pages_in_id_order(api: TestClient) -> None:
    experiment_id = await _experiment(api)
    other = await make_experiment(api, await make_project(api, "other"))
    await make_iteration(api, other)
    ids = [await make_iteration(api, experiment_id) for _ in range(4)]

    first = await get_json(api, f"/iteration/experiment/{experiment_id}?limit=3")
    last = await get_json(
        api, f"/iteration/experiment/{experiment_id}?limit=3&offset=3"
    )

    assert [i["id"] for i in first["data"]] == ids[:3]
    assert [i["id"] for i in last["data"]] == ids[3:]
    assert first["total"] == last["total"] == 4


async def test_iteration_list_of_missing_experiment_is_404(api: TestClient) -> None:
    await refused(api, "GET", "/iteration/experiment/42", 404, "NOT_FOUND")
    await refused(api, "POST", "/iteration/experiment/42", 404, "NOT_FOUND", json={})


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
@pytest.mark.parametrize(
    "raw", ["999", "x1", "0", "9223372036854775808", "18446744073709551616"]
)
async def test_missing_or_malformed_iteration_id_is_404(
    api: TestClient, method: str, raw: str
) -> None:
    await make_iteration(api, await _experiment(api))

    await refused(api, method, f"/iteration/{raw}", 404, "NOT_FOUND", json={})


async def test_finishing_sets_end_date_and_running_again_clears_it(
    api: TestClient,
) -> None:
    iteration_id = await make_iteration(api, await _experiment(api))
    path = f"/iteration/{iteration_id}"

    await patch_json(api, path, {"status_id": 2})
    succeeded = await get_json(api, path)
    await patch_json(api, path, {"status_id": 1})
    running = await get_json(api, path)

    assert succeeded["status_id"] == 2
    assert succeeded["end_date"] is not None
    assert succeeded["end_date"] == succeeded["updated_date"]
    assert running["status_id"] == 1
    assert running["end_date"] is None


@pytest.mark.parametrize("status", [2, 3, 4])
async def test_every_final_status_ends_the_run(api: TestClient, status: int) -> None:
    iteration_id = await make_iteration(api, await _experiment(api))

    await patch_json(api, f"/iteration/{iteration_id}", {"status_id": status})

    iteration = await get_json(api, f"/iteration/{iteration_id}")
    assert iteration["status_id"] == status
    assert iteration["end_date"] is not None


async def test_same_status_again_leaves_end_date(api: TestClient) -> None:
    iteration_id = await make_iteration(api, await _experiment(api))
    path = f"/iteration/{iteration_id}"
    await patch_json(api, path, {"status_id": 3})
    failed = await get_json(api, path)
    await tick()

    await patch_json(api, path, {"status_id": 3, "error_message": "OOM"})

    again = await get_json(api, path)
    assert again["end_date"] == failed["end_date"]
    assert again["error_message"] == "OOM"
    assert again["updated_date"] > failed["updated_date"]


async def test_notes_change_leaves_end_date(api: TestClient) -> None:
    iteration_id = await make_iteration(api, await _experiment(api))
    path = f"/iteration/{iteration_id}"
    await patch_json(api, path, {"status_id": 2})
    done = await get_json(api, path)
    await tick()

    await patch_json(api, path, {"notes": "looked fine"})

    after = await get_json(api, path)
    assert after["end_date"] == done["end_date"]
    assert after["notes"] == "looked fine"


async def test_parent_in_the_same_experiment_is_kept(api: TestClient) -> None:
    experiment_id = await _experiment(api)
    parent = await make_iteration(api, experiment_id)

    body = await post_json(
        api, f"/iteration/experiment/{experiment_id}", {"parent_iteration_id": parent}
    )

    child = await get_json(api, f"/iteration/{body['iteration_id']}")
    assert child["parent_iteration_id"] == parent


@pytest.mark.parametrize("where", ["sibling_experiment", "other_project", "missing"])
async def test_parent_outside_the_experiment_is_422(
    api: TestClient, mongo: Any, settings: Settings, where: str
) -> None:
    db = database(mongo, settings)
    ids = await lineage(api)
    sibling = await make_experiment(api, ids["project_id"], "sibling")
    other = await make_experiment(api, await make_project(api, "other"))
    parents = {
        "sibling_experiment": await make_iteration(api, sibling),
        "other_project": await make_iteration(api, other),
        "missing": 999,
    }
    before = await contents(db)

    message = await refused(
        api,
        "POST",
        f"/iteration/experiment/{ids['experiment_id']}",
        422,
        "INVALID_PAYLOAD",
        json={"parent_iteration_id": parents[where]},
    )

    assert message.startswith("parent_iteration_id")
    assert await contents(db) == before


async def test_deleting_a_parent_detaches_its_children(api: TestClient) -> None:
    experiment_id = await _experiment(api)
    parent = await make_iteration(api, experiment_id)
    child = await post_json(
        api, f"/iteration/experiment/{experiment_id}", {"parent_iteration_id": parent}
    )

    await delete(api, f"/iteration/{parent}")

    await refused(api, "GET", f"/iteration/{parent}", 404, "NOT_FOUND")
    orphan = await get_json(api, f"/iteration/{child['iteration_id']}")
    assert orphan["parent_iteration_id"] is None
    assert orphan["updated_date"] is not None


async def test_unreferenced_iteration_delete_answers_ok(api: TestClient) -> None:
    experiment_id = await _experiment(api)
    iteration_id = await make_iteration(api, experiment_id)
    kept = await make_iteration(api, experiment_id)

    body = await delete(api, f"/iteration/{iteration_id}")

    assert body == {"message": "OK"}
    page = await get_json(api, f"/iteration/experiment/{experiment_id}")
    assert [i["id"] for i in page["data"]] == [kept]


async def test_iteration_delete_is_409_while_a_version_names_it(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    db = database(mongo, settings)
    ids = await lineage(api)
    await post_json(
        api,
        f"/iteration/experiment/{ids['experiment_id']}",
        {"parent_iteration_id": ids["iteration_id"]},
    )
    version_id = await register(api, ids["model_id"], ids["iteration_id"])
    before = await contents(db)

    message = await refused(
        api, "DELETE", f"/iteration/{ids['iteration_id']}", 409, "CONFLICT"
    )

    assert str(ids["iteration_id"]) in message
    assert await contents(db) == before
    version = await get_json(api, f"/modelversion/{version_id}")
    assert version["iteration_id"] == ids["iteration_id"]
