"""The in-process API answers with the reference's outcomes."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from app import keys
from app.registry import Pagination, Registry, UpsertResult
from app.schemas import Page, Stage
from tests.helpers import lineage, make_project


def _registry(api: TestClient) -> Registry:
    app = api.server.app
    return Registry(app[keys.SERVICES], app[keys.ADMIN])


async def test_create_model_reports_created_then_duplicate(api: TestClient) -> None:
    registry = _registry(api)
    project_id = await make_project(api)

    first = await registry.create_model(project_id, "fraud")
    second = await registry.create_model(project_id, "fraud")

    assert first[1] is UpsertResult.CREATED and first[0] is not None
    assert second == (None, UpsertResult.DUPLICATE)


async def test_create_model_in_missing_project_is_unprocessable(
    api: TestClient,
) -> None:
    registry = _registry(api)

    assert await registry.create_model(999, "fraud") == (
        None,
        UpsertResult.UNPROCESSABLE,
    )


async def test_getters_return_none_for_missing_records(api: TestClient) -> None:
    registry = _registry(api)

    assert await registry.get_model(42) is None
    assert await registry.get_modelversion(42) is None
    assert await registry.get_models(42) == []


async def test_versions_promote_with_stage_or_int(api: TestClient) -> None:
    registry = _registry(api)
    ids = await lineage(api)
    first, _ = await registry.create_modelversion(ids["model_id"], ids["iteration_id"])
    second, _ = await registry.create_modelversion(ids["model_id"], ids["iteration_id"])
    assert first is not None and second is not None

    assert await registry.update_modelversion(first, Stage.PRODUCTION) is (
        UpsertResult.UPDATED
    )
    assert await registry.update_modelversion(second, 3) is UpsertResult.UPDATED

    archived = await registry.get_modelversion(first)
    promoted = await registry.get_modelversion(second)
    assert archived is not None and archived.stage_id is Stage.ARCHIVED
    assert promoted is not None and promoted.stage_id is Stage.PRODUCTION


async def test_bad_stage_and_foreign_lineage_are_unprocessable(
    api: TestClient,
) -> None:
    registry = _registry(api)
    ids = await lineage(api)
    other = await lineage(api, "other")
    version_id, _ = await registry.create_modelversion(
        ids["model_id"], ids["iteration_id"]
    )
    assert version_id is not None

    assert await registry.update_modelversion(version_id, 7) is (
        UpsertResult.UNPROCESSABLE
    )
    assert await registry.create_modelversion(
        ids["model_id"], other["iteration_id"]
    ) == (None, UpsertResult.UNPROCESSABLE)


async def test_get_models_lists_all_or_one_page(api: TestClient) -> None:
    registry = _registry(api)
    project_id = await make_project(api)
    for n in range(3):
        await registry.create_model(project_id, f"m{n}")

    everything = await registry.get_models(project_id)
    page = await registry.get_models(project_id, Pagination(limit=2, offset=1))

    assert [model.name for model in everything] == ["m0", "m1", "m2"]  # type: ignore[union-attr]
    assert isinstance(page, Page)
    assert (page.total, [m.name for m in page.data]) == (3, ["m1", "m2"])


async def test_deletes_report_success_as_bool(api: TestClient) -> None:
    registry = _registry(api)
    project_id = await make_project(api)
    model_id, _ = await registry.create_model(project_id, "fraud")
    assert model_id is not None

    assert await registry.delete_model(model_id) is True
    assert await registry.delete_model(model_id) is False
    assert await registry.delete_modelversion(12345) is False
