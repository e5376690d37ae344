"""Model versions over HTTP: the registry's rules of SPEC 2 (numbering,
one production version, any-to-any stages, lineage inside the project)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app.errors import DatabaseUnavailable
from app.services.history import History
from app.settings import Settings
from tests.helpers import (
    contents,
    database,
    delete,
    get_json,
    lineage,
    make_experiment,
    make_iteration,
    make_model,
    make_project,
    patch_json,
    refused,
    register,
    tick,
    upload,
)

NO_STAGE, STAGING, PRODUCTION, ARCHIVED = 1, 2, 3, 4


async def _versions(api: TestClient, model_id: int) -> list[dict[str, Any]]:
    page = await get_json(api, f"/modelversion/model/{model_id}?limit=200")
    return list(page["data"])


async def _stage(api: TestClient, version_id: int, stage_id: int) -> None:
    await patch_json(api, f"/modelversion/{version_id}", {"stage_id": stage_id})


async def _version(api: TestClient, version_id: int) -> dict[str, Any]:
    return dict(await get_json(api, f"/modelversion/{version_id}"))


# Registration -------------------------------------------------------------


async def test_registration_answers_201_with_location(api: TestClient) -> None:
    ids = await lineage(api)

    response = await api.post(
        f"/modelversion/model/{ids['model_id']}",
        json={"iteration_id": ids["iteration_id"], "description": "first cut"},
    )
    body = await response.json()

    assert response.status == 201
    assert set(body) == {"modelversion_id"}
    assert response.headers["Location"] == f"/modelversion/{body['modelversion_id']}"
    version = await get_json(api, response.headers["Location"])
    assert version == {
        "id": body["modelversion_id"],
        "model_id": ids["model_id"],
        "version": 1,
        "iteration_id": ids["iteration_id"],
        "resource_id": None,
        "stage_id": NO_STAGE,
        "description": "first cut",
        "created_date": version["created_date"],
        "updated_date": None,
        "revision": 1,
    }


async def test_registration_keeps_its_artifact(api: TestClient) -> None:
    ids = await lineage(api)
    resource_id = await upload(api, ids["experiment_id"], b"weights")

    version_id = await register(
        api, ids["model_id"], ids["iteration_id"], resource_id=resource_id
    )

    assert (await _version(api, version_id))["resource_id"] == resource_id


async def test_versions_number_one_to_n_per_model(api: TestClient) -> None:
    ids = await lineage(api)
    other = await make_model(api, ids["project_id"], "other")

    for _ in range(4):
        await register(api, ids["model_id"], ids["iteration_id"])
    await register(api, other, ids["iteration_id"])

    assert [v["version"] for v in await _versions(api, ids["model_id"])] == [
        1,
        2,
        3,
        4,
    ]
    assert [v["version"] for v in await _versions(api, other)] == [1]


async def test_version_list_pages_by_version(api: TestClient) -> None:
    ids = await lineage(api)
    version_ids = [
        await register(api, ids["model_id"], ids["iteration_id"]) for _ in range(5)
    ]

    page = await get_json(
        api, f"/modelversion/model/{ids['model_id']}?limit=2&offset=2"
    )

    assert [v["id"] for v in page["data"]] == version_ids[2:4]
    assert [v["version"] for v in page["data"]] == [3, 4]
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 2)


async def test_numbers_are_not_reused_after_deleting_the_newest(
    api: TestClient,
) -> None:
    ids = await lineage(api)
    await register(api, ids["model_id"], ids["iteration_id"])
    newest = await register(api, ids["model_id"], ids["iteration_id"])
    await delete(api, f"/modelversion/{newest}")

    again = await register(api, ids["model_id"], ids["iteration_id"])

    assert (await _version(api, again))["version"] == 3
    assert [v["version"] for v in await _versions(api, ids["model_id"])] == [1, 3]


async def test_numbers_are_not_reused_after_deleting_every_version(
    api: TestClient,
) -> None:
    ids = await lineage(api)
    first = await register(api, ids["model_id"], ids["iteration_id"])
    await delete(api, f"/modelversion/{first}")

    again = await register(api, ids["model_id"], ids["iteration_id"])

    assert (await _version(api, again))["version"] == 2


async def _foreign_lineage(api: TestClient) -> dict[str, int]:
    """The ids of a second project's iteration and resource."""
    other_project = await make_project(api, "other")
    other_experiment = await make_experiment(api, other_project)
    return {
        "iteration_id": await make_iteration(api, other_experiment),
        "resource_id": await upload(api, other_experiment, b"foreign"),
    }


def _shape(message: str) -> str:
    """The message with its ids blanked out."""
    return re.sub(r"\d+", "N", message)


async def test_foreign_and_missing_lineage_get_the_same_422(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    db = database(mongo, settings)
    ids = await lineage(api)
    foreign = await _foreign_lineage(api)
    path = f"/modelversion/model/{ids['model_id']}"
    before = await contents(db)

    foreign_iteration = await refused(
        api,
        "POST",
        path,
        422,
        "INVALID_PAYLOAD",
        json={"iteration_id": foreign["iteration_id"]},
    )
    missing_iteration = await refused(
        api, "POST", path, 422, "INVALID_PAYLOAD", json={"iteration_id": 9999}
    )
    foreign_resource = await refused(
        api,
        "POST",
        path,
        422,
        "INVALID_PAYLOAD",
        json={
            "iteration_id": ids["iteration_id"],
            "resource_id": foreign["resource_id"],
        },
    )
    missing_resource = await refused(
        api,
        "POST",
        path,
        422,
        "INVALID_PAYLOAD",
        json={"iteration_id": ids["iteration_id"], "resource_id": 9999},
    )

    assert _shape(foreign_iteration) == _shape(missing_iteration)
    assert _shape(foreign_resource) == _shape(missing_resource)
    assert foreign_iteration.startswith("iteration_id:")
    assert foreign_resource.startswith("resource_id:")
    assert str(foreign["iteration_id"]) in foreign_iteration
    assert await contents(db) == before


async def test_refused_registrations_consume_no_number(api: TestClient) -> None:
    ids = await lineage(api)
    foreign = await _foreign_lineage(api)
    path = f"/modelversion/model/{ids['model_id']}"
    await register(api, ids["model_id"], ids["iteration_id"])
    for body in (
        {"iteration_id": foreign["iteration_id"]},
        {"iteration_id": 9999},
        {"iteration_id": ids["iteration_id"], "resource_id": foreign["resource_id"]},
        {"iteration_id": ids["iteration_id"], "resource_id": 9999},
        {"iteration_id": ids["iteration_id"], "version": 7},
        {"iteration_id": "1"},
    ):
        await refused(api, "POST", path, 422, "INVALID_PAYLOAD", json=body)

    second = await register(api, ids["model_id"], ids["iteration_id"])

    assert (await _version(api, second))["version"] == 2


async def test_iteration_of_a_sibling_experiment_is_fine(api: TestClient) -> None:
    ids = await lineage(api)
    sibling = await make_experiment(api, ids["project_id"], "sibling")
    iteration_id = await make_iteration(api, sibling)
    resource_id = await upload(api, ids["experiment_id"], b"weights")

    version_id = await register(
        api, ids["model_id"], iteration_id, resource_id=resource_id
    )

    version = await _version(api, version_id)
    assert (version["iteration_id"], version["resource_id"]) == (
        iteration_id,
        resource_id,
    )


@pytest.mark.parametrize("version", [1, 2, 99, None])
async def test_client_sent_version_is_refused(
    api: TestClient, mongo: Any, settings: Settings, version: Any
) -> None:
    ids = await lineage(api)

    message = await refused(
        api,
        "POST",
        f"/modelversion/model/{ids['model_id']}",
        422,
        "INVALID_PAYLOAD",
        json={"iteration_id": ids["iteration_id"], "version": version},
    )

    assert message.startswith("version:")
    assert await database(mongo, settings).modelversions.count_documents({}) == 0


@pytest.mark.parametrize("field", ["stage_id", "model_id", "id", "created_date"])
async def test_server_owned_fields_are_refused_on_registration(
    api: TestClient, field: str
) -> None:
    ids = await lineage(api)

    message = await refused(
        api,
        "POST",
        f"/modelversion/model/{ids['model_id']}",
        422,
        "INVALID_PAYLOAD",
        json={"iteration_id": ids["iteration_id"], field: 3},
    )

    assert message.startswith(f"{field}:")


async def test_version_cannot_be_renumbered_by_patch(api: TestClient) -> None:
    ids = await lineage(api)
    version_id = await register(api, ids["model_id"], ids["iteration_id"])

    await refused(
        api,
        "PATCH",
        f"/modelversion/{version_id}",
        422,
        "INVALID_PAYLOAD",
        json={"version": 5},
    )

    assert (await _version(api, version_id))["version"] == 1


async def test_registration_on_missing_model_is_404(api: TestClient) -> None:
    ids = await lineage(api)

    await refused(
        api,
        "POST",
        "/modelversion/model/999",
        404,
        "NOT_FOUND",
        json={"iteration_id": ids["iteration_id"]},
    )


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
@pytest.mark.parametrize(
    "raw", ["999", "v1", "0", "9223372036854775808", "18446744073709551616"]
)
async def test_missing_or_malformed_version_id_is_404(
    api: TestClient, method: str, raw: str
) -> None:
    ids = await lineage(api)
    await register(api, ids["model_id"], ids["iteration_id"])

    await refused(api, method, f"/modelversion/{raw}", 404, "NOT_FOUND", json={})


@pytest.mark.parametrize("raw", ["999", "x", "18446744073709551616"])
async def test_versions_of_missing_or_malformed_model_are_404(
    api: TestClient, raw: str
) -> None:
    await refused(api, "GET", f"/modelversion/model/{raw}", 404, "NOT_FOUND")


# Stages -------------------------------------------------------------------


async def test_promotion_archives_the_previous_production_version(
    api: TestClient,
) -> None:
    ids = await lineage(api)
    first = await register(api, ids["model_id"], ids["iteration_id"])
    second = await register(api, ids["model_id"], ids["iteration_id"])
    staged = await register(api, ids["model_id"], ids["iteration_id"])
    await _stage(api, staged, STAGING)
    await _stage(api, first, PRODUCTION)

    await _stage(api, second, PRODUCTION)

    stages = {v["id"]: v["stage_id"] for v in await _versions(api, ids["model_id"])}
    assert stages == {first: ARCHIVED, second: PRODUCTION, staged: STAGING}


async def test_promotion_leaves_other_models_alone(api: TestClient) -> None:
    ids = await lineage(api)
    other = await make_model(api, ids["project_id"], "other")
    theirs = await register(api, other, ids["iteration_id"])
    ours = await register(api, ids["model_id"], ids["iteration_id"])
    await _stage(api, theirs, PRODUCTION)

    await _stage(api, ours, PRODUCTION)

    assert (await _version(api, theirs))["stage_id"] == PRODUCTION
    assert (await _version(api, ours))["stage_id"] == PRODUCTION


async def test_setting_the_same_stage_again_is_a_no_op(api: TestClient) -> None:
    ids = await lineage(api)
    first = await register(api, ids["model_id"], ids["iteration_id"])
    await _stage(api, first, PRODUCTION)
    before = await _versions(api, ids["model_id"])
    await tick()

    body = await patch_json(api, f"/modelversion/{first}", {"stage_id": PRODUCTION})

    assert body == {"message": "UPDATED"}
    assert await _versions(api, ids["model_id"]) == before


async def test_same_stage_on_a_fresh_version_keeps_updated_date_null(
    api: TestClient,
) -> None:
    ids = await lineage(api)
    version_id = await register(api, ids["model_id"], ids["iteration_id"])

    await _stage(api, version_id, NO_STAGE)

    assert (await _version(api, version_id))["updated_date"] is None


@pytest.mark.parametrize("start", [NO_STAGE, STAGING, PRODUCTION, ARCHIVED])
@pytest.mark.parametrize("target", [NO_STAGE, STAGING, PRODUCTION, ARCHIVED])
async def test_any_stage_moves_to_any_stage(
    api: TestClient, start: int, target: int
) -> None:
    ids = await lineage(api)
    version_id = await register(api, ids["model_id"], ids["iteration_id"])
    await _stage(api, version_id, start)

    await _stage(api, version_id, target)

    assert (await _version(api, version_id))["stage_id"] == target


async def test_rollback_re_promotes_an_archived_version(api: TestClient) -> None:
    ids = await lineage(api)
    old = await register(api, ids["model_id"], ids["iteration_id"])
    new = await register(api, ids["model_id"], ids["iteration_id"])
    await _stage(api, old, PRODUCTION)
    await _stage(api, new, PRODUCTION)

    await _stage(api, old, PRODUCTION)

    assert (await _version(api, old))["stage_id"] == PRODUCTION
    assert (await _version(api, new))["stage_id"] == ARCHIVED
    production = [
        v for v in await _versions(api, ids["model_id"]) if v["stage_id"] == PRODUCTION
    ]
    assert [v["id"] for v in production] == [old]


async def test_demoting_production_leaves_no_production_version(
    api: TestClient,
) -> None:
    ids = await lineage(api)
    version_id = await register(api, ids["model_id"], ids["iteration_id"])
    await _stage(api, version_id, PRODUCTION)

    await _stage(api, version_id, STAGING)

    stages = [v["stage_id"] for v in await _versions(api, ids["model_id"])]
    assert stages == [STAGING]


async def test_updated_date_is_null_until_first_change_then_moves(
    api: TestClient,
) -> None:
    ids = await lineage(api)
    version_id = await register(api, ids["model_id"], ids["iteration_id"])
    fresh = await _version(api, version_id)

    await _stage(api, version_id, STAGING)
    staged = await _version(api, version_id)
    await tick()
    await patch_json(api, f"/modelversion/{version_id}", {"description": "ok"})
    described = await _version(api, version_id)

    assert fresh["updated_date"] is None
    assert staged["updated_date"] is not None
    assert staged["updated_date"] >= staged["created_date"]
    assert described["updated_date"] > staged["updated_date"]


async def test_auto_archiving_moves_updated_date(api: TestClient) -> None:
    ids = await lineage(api)
    old = await register(api, ids["model_id"], ids["iteration_id"])
    new = await register(api, ids["model_id"], ids["iteration_id"])
    await _stage(api, old, PRODUCTION)
    promoted = await _version(api, old)
    await tick()

    await _stage(api, new, PRODUCTION)

    archived = await _version(api, old)
    assert archived["stage_id"] == ARCHIVED
    assert archived["updated_date"] > promoted["updated_date"]
    assert archived["updated_date"] == (await _version(api, new))["updated_date"]


async def test_description_only_patch_keeps_the_stage(api: TestClient) -> None:
    ids = await lineage(api)
    version_id = await register(api, ids["model_id"], ids["iteration_id"])
    await _stage(api, version_id, PRODUCTION)

    await patch_json(
        api, f"/modelversion/{version_id}", {"description": "served since May"}
    )

    version = await _version(api, version_id)
    assert (version["stage_id"], version["description"]) == (
        PRODUCTION,
        "served since May",
    )


# Artifacts ----------------------------------------------------------------


async def test_patch_attaches_an_artifact_of_the_same_project(
    api: TestClient,
) -> None:
    ids = await lineage(api)
    version_id = await register(api, ids["model_id"], ids["iteration_id"])
    other_experiment = await make_experiment(api, ids["project_id"], "artifacts")
    resource_id = await upload(api, other_experiment, b"weights")

    await patch_json(api, f"/modelversion/{version_id}", {"resource_id": resource_id})

    version = await _version(api, version_id)
    assert version["resource_id"] == resource_id
    assert version["updated_date"] is not None


async def test_patch_with_foreign_or_missing_artifact_is_the_same_422(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    db = database(mongo, settings)
    ids = await lineage(api)
    own = await upload(api, ids["experiment_id"], b"own")
    version_id = await register(
        api, ids["model_id"], ids["iteration_id"], resource_id=own
    )
    foreign = await _foreign_lineage(api)
    before = await contents(db)

    foreign_message = await refused(
        api,
        "PATCH",
        f"/modelversion/{version_id}",
        422,
        "INVALID_PAYLOAD",
        json={"resource_id": foreign["resource_id"], "stage_id": PRODUCTION},
    )
    missing_message = await refused(
        api,
        "PATCH",
        f"/modelversion/{version_id}",
        422,
        "INVALID_PAYLOAD",
        json={"resource_id": 9999, "stage_id": PRODUCTION},
    )

    assert _shape(foreign_message) == _shape(missing_message)
    assert foreign_message.startswith("resource_id:")
    assert await contents(db) == before
    version = await _version(api, version_id)
    assert (version["resource_id"], version["stage_id"]) == (own, NO_STAGE)


async def test_version_delete_leaves_its_resource(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    ids = await lineage(api)
    resource_id = await upload(api, ids["experiment_id"], b"weights")
    version_id = await register(
        api, ids["model_id"], ids["iteration_id"], resource_id=resource_id
    )

    body = await delete(api, f"/modelversion/{version_id}")

    assert body == {"message": "OK"}
    await refused(api, "GET", f"/modelversion/{version_id}", 404, "NOT_FOUND")
    data = await api.get(f"/resource/{resource_id}/data")
    assert await data.read() == b"weights"
    assert await database(mongo, settings)["fs.files"].count_documents({}) == 1


async def test_deleting_the_production_version_frees_the_slot(
    api: TestClient,
) -> None:
    ids = await lineage(api)
    old = await register(api, ids["model_id"], ids["iteration_id"])
    await _stage(api, old, PRODUCTION)
    await delete(api, f"/modelversion/{old}")
    new = await register(api, ids["model_id"], ids["iteration_id"])

    await _stage(api, new, PRODUCTION)

    assert (await _version(api, new))["stage_id"] == PRODUCTION


async def test_a_batch_of_registrations_that_failed_as_a_whole_is_not_run_again(
    api: TestClient, mongo: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The transaction may have committed without telling (its answer lost):
    # running each registration again could register it twice.
    ids = await lineage(api)
    record = History.record_requests

    async def record_then_fail(self: History, *args: Any, **kwargs: Any) -> None:
        await record(self, *args, **kwargs)
        raise DatabaseUnavailable("the commit's answer was lost")

    monkeypatch.setattr(History, "record_requests", record_then_fail)
    path = f"/modelversion/model/{ids['model_id']}"
    responses = await asyncio.gather(
        *(api.post(path, json={"iteration_id": ids["iteration_id"]}) for _ in range(3))
    )
    monkeypatch.undo()

    assert [r.status for r in responses] == [503] * 3
    stored = database(mongo, settings).modelversions
    assert await stored.count_documents({"model_id": ids["model_id"]}) == 3
