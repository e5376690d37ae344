"""Which version is in production: the lookup, its ETag, the answer at a
past moment, and the stage filter of the version list."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from app import keys
from app.client import Pagination, Stage, connect, connect_sync
from tests.auth_modes import url_of
from tests.conftest import Caller
from tests.helpers import (
    delete,
    get_json,
    lineage,
    patch_json,
    refused,
    register,
    tick,
    upload,
)

NO_STAGE, STAGING, PRODUCTION, ARCHIVED = 1, 2, 3, 4


async def _stage(caller: Any, version_id: int, stage_id: int) -> None:
    await patch_json(caller, f"/modelversion/{version_id}", {"stage_id": stage_id})


async def _production(caller: Any, model_id: int, **headers: str) -> Any:
    return await caller.get(f"/model/{model_id}/production", headers=headers)


async def _events(caller: Any, model_id: int) -> list[dict[str, Any]]:
    page = await get_json(caller, f"/model/{model_id}/history?limit=200")
    return list(page["data"])


async def _at(caller: Any, model_id: int, moment: str) -> Any:
    return await caller.get(f"/model/{model_id}/production?at={quote(moment)}")


# Now -----------------------------------------------------------------------


async def test_production_answers_the_promoted_version(caller: Caller) -> None:
    ids = await lineage(caller)
    await register(caller, ids["model_id"], ids["iteration_id"])
    promoted = await register(caller, ids["model_id"], ids["iteration_id"])
    await _stage(caller, promoted, PRODUCTION)

    response = await _production(caller, ids["model_id"])
    body = await response.json()

    assert response.status == 200
    assert body == await get_json(caller, f"/modelversion/{promoted}")
    assert body["stage_id"] == PRODUCTION
    assert response.headers["ETag"] == f'"{promoted}-{body["revision"]}"'
    assert response.headers["Cache-Control"] == "private, no-cache"


async def test_model_without_production_version_is_404_saying_so(
    caller: Caller,
) -> None:
    ids = await lineage(caller)
    await register(caller, ids["model_id"], ids["iteration_id"])

    message = await refused(
        caller, "GET", f"/model/{ids['model_id']}/production", 404, "NOT_FOUND"
    )

    assert message == f"model {ids['model_id']} has no version in production"


async def test_missing_model_is_404_saying_the_model_is_missing(
    caller: Caller,
) -> None:
    message = await refused(caller, "GET", "/model/999/production", 404, "NOT_FOUND")

    assert message == "model 999 not found"


async def test_if_none_match_with_the_current_etag_is_304_without_body(
    caller: Caller,
) -> None:
    ids = await lineage(caller)
    version_id = await register(caller, ids["model_id"], ids["iteration_id"])
    await _stage(caller, version_id, PRODUCTION)
    etag = (await _production(caller, ids["model_id"])).headers["ETag"]

    response = await _production(caller, ids["model_id"], **{"If-None-Match": etag})

    assert response.status == 304
    assert await response.read() == b""
    assert response.headers["ETag"] == etag
    assert response.headers["Cache-Control"] == "private, no-cache"


async def test_if_none_match_with_a_stale_etag_answers_the_body(
    caller: Caller,
) -> None:
    ids = await lineage(caller)
    version_id = await register(caller, ids["model_id"], ids["iteration_id"])
    await _stage(caller, version_id, PRODUCTION)
    stale = (await _production(caller, ids["model_id"])).headers["ETag"]
    await patch_json(caller, f"/modelversion/{version_id}", {"description": "v2"})

    response = await _production(caller, ids["model_id"], **{"If-None-Match": stale})

    assert response.status == 200
    assert (await response.json())["description"] == "v2"
    assert response.headers["ETag"] != stale


async def _changes(caller: Caller, ids: dict[str, int], first: int) -> list[Any]:
    """Changes after which the production answer differs."""
    second = await register(caller, ids["model_id"], ids["iteration_id"])
    resource_id = await upload(caller, ids["experiment_id"], b"weights")
    return [
        lambda: patch_json(caller, f"/modelversion/{first}", {"description": "d"}),
        lambda: patch_json(
            caller, f"/modelversion/{first}", {"resource_id": resource_id}
        ),
        lambda: _stage(caller, second, PRODUCTION),
        lambda: _stage(caller, first, PRODUCTION),
    ]


async def test_etag_changes_whenever_the_answer_does(caller: Caller) -> None:
    ids = await lineage(caller)
    first = await register(caller, ids["model_id"], ids["iteration_id"])
    await _stage(caller, first, PRODUCTION)
    changes = await _changes(caller, ids, first)
    seen = [(await _production(caller, ids["model_id"])).headers["ETag"]]

    for change in changes:
        await change()
        seen.append((await _production(caller, ids["model_id"])).headers["ETag"])

    assert len(set(seen)) == len(seen), seen


async def test_same_stage_again_keeps_the_etag(caller: Caller) -> None:
    ids = await lineage(caller)
    version_id = await register(caller, ids["model_id"], ids["iteration_id"])
    await _stage(caller, version_id, PRODUCTION)
    before = (await _production(caller, ids["model_id"])).headers["ETag"]

    await _stage(caller, version_id, PRODUCTION)

    assert (await _production(caller, ids["model_id"])).headers["ETag"] == before


@pytest.mark.parametrize("leave", ["demote", "delete"])
async def test_production_version_leaving_leaves_404(
    caller: Caller, leave: str
) -> None:
    ids = await lineage(caller)
    version_id = await register(caller, ids["model_id"], ids["iteration_id"])
    await _stage(caller, version_id, PRODUCTION)

    if leave == "demote":
        await _stage(caller, version_id, STAGING)
    else:
        await delete(caller, f"/modelversion/{version_id}")

    await refused(
        caller, "GET", f"/model/{ids['model_id']}/production", 404, "NOT_FOUND"
    )


async def test_production_lookup_is_one_database_call(caller: Caller) -> None:
    ids = await lineage(caller)
    version_id = await register(caller, ids["model_id"], ids["iteration_id"])
    await _stage(caller, version_id, PRODUCTION)
    store = caller.api.app[keys.SERVICES].store
    calls: list[str] = []
    for name in ("get", "find_one", "exists", "find_all", "page", "aggregate"):
        _count_calls(store, name, calls)

    response = await _production(caller, ids["model_id"])

    assert response.status == 200
    # With authentication on, the request first loads its caller (one
    # aggregate: the user with their permissions), as every request does.
    expected = ["find_one"] if caller.token is None else ["aggregate", "find_one"]
    assert calls == expected


def _count_calls(store: Any, name: str, calls: list[str]) -> None:
    original = getattr(store, name)

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return await original(*args, **kwargs)

    setattr(store, name, counted)


# With authentication on ------------------------------------------------------


async def test_production_without_read_permission_is_the_plain_404(
    admin: Caller, make_user: Any
) -> None:
    ids = await lineage(admin)
    version_id = await register(admin, ids["model_id"], ids["iteration_id"])
    await _stage(admin, version_id, PRODUCTION)
    stranger = await make_user("stranger")

    hidden = await refused(
        stranger, "GET", f"/model/{ids['model_id']}/production", 404, "NOT_FOUND"
    )
    absent = await refused(stranger, "GET", "/model/999/production", 404, "NOT_FOUND")

    assert re.sub(r"\d+", "N", hidden) == re.sub(r"\d+", "N", absent)


async def test_reader_gets_the_production_version_and_its_etag(
    admin: Caller, make_user: Any
) -> None:
    ids = await lineage(admin)
    version_id = await register(admin, ids["model_id"], ids["iteration_id"])
    await _stage(admin, version_id, PRODUCTION)
    reader = await make_user("reader", {ids["project_id"]: "r"})

    response = await _production(reader, ids["model_id"])
    etag = response.headers["ETag"]
    again = await _production(reader, ids["model_id"], **{"If-None-Match": etag})

    assert response.status == 200
    assert (await response.json())["id"] == version_id
    assert again.status == 304


# At a moment in the past ---------------------------------------------------


async def test_production_at_a_moment_answers_the_version_then(
    caller: Caller,
) -> None:
    ids = await lineage(caller)
    first = await register(caller, ids["model_id"], ids["iteration_id"])
    second = await register(caller, ids["model_id"], ids["iteration_id"])
    await tick()
    await _stage(caller, first, PRODUCTION)
    await tick()
    await _stage(caller, second, PRODUCTION)
    events = await _events(caller, ids["model_id"])
    first_promoted = events[2]["at"]
    second_promoted = events[-1]["at"]

    before = await _at(caller, ids["model_id"], events[0]["at"])
    then = await _at(caller, ids["model_id"], first_promoted)
    now = await _at(caller, ids["model_id"], second_promoted)

    assert before.status == 404
    assert "had no version in production" in (await before.json())["message"]
    assert (await then.json())["id"] == first
    assert (await now.json())["id"] == second
    assert first_promoted < second_promoted


async def test_production_at_a_moment_after_demotion_is_404(caller: Caller) -> None:
    ids = await lineage(caller)
    version_id = await register(caller, ids["model_id"], ids["iteration_id"])
    await _stage(caller, version_id, PRODUCTION)
    await tick()
    await _stage(caller, version_id, ARCHIVED)
    demoted = (await _events(caller, ids["model_id"]))[-1]["at"]

    response = await _at(caller, ids["model_id"], demoted)

    assert response.status == 404


async def test_production_at_a_moment_names_a_version_deleted_since(
    caller: Caller,
) -> None:
    ids = await lineage(caller)
    version_id = await register(caller, ids["model_id"], ids["iteration_id"])
    await _stage(caller, version_id, PRODUCTION)
    promoted = (await _events(caller, ids["model_id"]))[-1]["at"]
    await tick()
    await delete(caller, f"/modelversion/{version_id}")

    response = await _at(caller, ids["model_id"], promoted)
    body = await response.json()

    assert response.status == 404
    assert body["code"] == "NOT_FOUND"
    assert f"model version {version_id}" in body["message"]
    assert "deleted" in body["message"]


async def test_production_at_reads_offsets_and_times_without_one(
    caller: Caller,
) -> None:
    ids = await lineage(caller)
    version_id = await register(caller, ids["model_id"], ids["iteration_id"])
    await _stage(caller, version_id, PRODUCTION)
    promoted = (await _events(caller, ids["model_id"]))[-1]["at"]  # ...Z
    naive = promoted.removesuffix("Z")
    shifted = _plus_two_hours(promoted)

    answers = [
        await _at(caller, ids["model_id"], naive),
        await _at(caller, ids["model_id"], shifted),
        # A "+" left unescaped in a query string arrives as a space.
        await caller.get(f"/model/{ids['model_id']}/production?at={shifted}"),
    ]

    assert [response.status for response in answers] == [200, 200, 200]


def _plus_two_hours(moment: str) -> str:
    """The same instant written in the +02:00 time zone."""
    instant = datetime.fromisoformat(moment)
    shifted = instant.astimezone(timezone(timedelta(hours=2)))
    return shifted.isoformat(timespec="milliseconds")


@pytest.mark.parametrize("moment", ["yesterday", "2024-13-01T00:00:00Z", "", "1" * 80])
async def test_production_at_a_time_that_is_not_iso_8601_is_422(
    caller: Caller, moment: str
) -> None:
    ids = await lineage(caller)

    message = await refused(
        caller,
        "GET",
        f"/model/{ids['model_id']}/production?at={quote(moment)}",
        422,
        "INVALID_PAYLOAD",
    )

    assert message.startswith("at: must be an ISO 8601 time")


@pytest.mark.parametrize(
    "moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]
)
async def test_production_at_a_time_beyond_the_calendar_is_422(
    api: TestClient, moment: str
) -> None:
    ids = await lineage(api)

    message = await refused(
        api,
        "GET",
        f"/model/{ids['model_id']}/production?at={quote(moment)}",
        422,
        "INVALID_PAYLOAD",
    )

    assert message.startswith("at:")


async def test_production_at_a_moment_of_a_missing_model_is_404(
    caller: Caller,
) -> None:
    message = await refused(
        caller, "GET", "/model/999/production?at=2024-01-01T00:00:00Z", 404, "NOT_FOUND"
    )

    assert message == "model 999 not found"


# The stage filter of the version list ------------------------------------


async def test_version_list_filters_by_stage_with_paging(caller: Caller) -> None:
    ids = await lineage(caller)
    versions = [
        await register(caller, ids["model_id"], ids["iteration_id"]) for _ in range(5)
    ]
    for version_id in versions[1:4]:
        await _stage(caller, version_id, STAGING)
    path = f"/modelversion/model/{ids['model_id']}"

    staging = await get_json(caller, f"{path}?stage_id={STAGING}&limit=2&offset=1")
    unstaged = await get_json(caller, f"{path}?stage_id={NO_STAGE}")
    production = await get_json(caller, f"{path}?stage_id={PRODUCTION}")

    assert [v["id"] for v in staging["data"]] == versions[2:4]
    assert (staging["total"], staging["limit"], staging["offset"]) == (3, 2, 1)
    assert [v["id"] for v in unstaged["data"]] == [versions[0], versions[4]]
    assert production["data"] == [] and production["total"] == 0


@pytest.mark.parametrize("stage", ["0", "5", "3.0", "true", "x", "", "-1", "03a"])
async def test_stage_filter_is_strict(caller: Caller, stage: str) -> None:
    ids = await lineage(caller)

    message = await refused(
        caller,
        "GET",
        f"/modelversion/model/{ids['model_id']}?stage_id={stage}",
        422,
        "INVALID_PAYLOAD",
    )

    assert message == "stage_id: must be one of 1, 2, 3, 4"


# The client -------------------------------------------------------------------


async def test_client_gets_production_and_reuses_an_unchanged_answer(
    caller: Caller,
) -> None:
    ids = await lineage(caller)
    version_id = await register(caller, ids["model_id"], ids["iteration_id"])

    async with connect(url_of(caller), token=caller.token) as client:
        before = await client.get_production(ids["model_id"])
        await client.update_modelversion(version_id, stage=Stage.PRODUCTION)
        first = await client.get_production(ids["model_id"])
        unchanged = await client.get_production(ids["model_id"])
        await client.update_modelversion(version_id, description="retrained")
        changed = await client.get_production(ids["model_id"])
        missing = await client.get_production(999)

    assert before is None and missing is None
    assert first is not None and first.id == version_id
    assert unchanged is first  # the server answered 304
    assert changed is not None and changed.description == "retrained"
    assert changed.revision == first.revision + 1


async def test_client_gets_production_at_a_moment(caller: Caller) -> None:
    ids = await lineage(caller)
    first = await register(caller, ids["model_id"], ids["iteration_id"])
    second = await register(caller, ids["model_id"], ids["iteration_id"])
    await _stage(caller, first, PRODUCTION)
    promoted = (await _events(caller, ids["model_id"]))[-1]["at"]
    await tick()
    await _stage(caller, second, PRODUCTION)
    moment = datetime.fromisoformat(promoted)

    async with connect(url_of(caller), token=caller.token) as client:
        then = await client.get_production(ids["model_id"], at=moment)
        naive = await client.get_production(
            ids["model_id"], at=moment.replace(tzinfo=None)
        )
        before = await client.get_production(
            ids["model_id"], at=moment - timedelta(days=1)
        )

    assert then is not None and then.id == first
    assert naive is not None and naive.id == first
    assert before is None


async def test_client_filters_versions_by_stage(caller: Caller) -> None:
    ids = await lineage(caller)
    versions = [
        await register(caller, ids["model_id"], ids["iteration_id"]) for _ in range(3)
    ]
    await _stage(caller, versions[1], STAGING)

    async with connect(url_of(caller), token=caller.token) as client:
        staging = await client.get_modelversions(ids["model_id"], stage=Stage.STAGING)
        page = await client.get_modelversions(
            ids["model_id"], Pagination(limit=1), stage=NO_STAGE
        )
        walked = [
            v.id async for v in client.iter_modelversions(ids["model_id"], stage=1)
        ]

    assert [v.id for v in staging] == [versions[1]]
    assert (page.total, [v.id for v in page.data]) == (2, [versions[0]])
    assert walked == [versions[0], versions[2]]


async def test_sync_client_gets_production(caller: Caller) -> None:
    ids = await lineage(caller)
    version_id = await register(caller, ids["model_id"], ids["iteration_id"])
    await _stage(caller, version_id, PRODUCTION)
    url, token = url_of(caller), caller.token

    def serve() -> tuple[int | None, list[int]]:
        with connect_sync(url, token=token) as client:
            found = client.get_production(ids["model_id"])
            in_production = client.get_modelversions(ids["model_id"], stage=3)
        return (found.id if found else None), [v.id for v in in_production]

    found, listed = await asyncio.to_thread(serve)

    assert (found, listed) == (version_id, [version_id])
