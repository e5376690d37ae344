"""No lost updates: every record's revision, its ETag, and If-Match on
PATCH and DELETE as one compare-and-set."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import keys
from app.client import ClientError, connect
from app.settings import Settings
from tests.auth_modes import url_of
from tests.conftest import Caller
from tests.helpers import (
    contents,
    database,
    get_json,
    lineage,
    make_experiment,
    make_iteration,
    patch_json,
    refused,
    register,
    upload,
)

PRODUCTION = 3


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test settings with a cheap bcrypt cost: every world has a user."""
    return settings.model_copy(update={"bcrypt_rounds": 4})


async def _world(api: TestClient) -> dict[str, int]:
    """One record of every kind."""
    ids = await lineage(api)
    ids["modelversion_id"] = await register(api, ids["model_id"], ids["iteration_id"])
    # Records no version points at, so that they can be deleted.
    ids["experiment_id"] = await make_experiment(api, ids["project_id"], "free")
    ids["iteration_id"] = await make_iteration(api, ids["experiment_id"])
    ids["resource_id"] = await upload(api, ids["experiment_id"], b"weights")
    response = await api.post(
        "/user", json={"username": "alice", "password": "alice-password"}
    )
    ids["user_id"] = (await response.json())["user_id"]
    response = await api.post(
        f"/userpermission/user/{ids['user_id']}/project/{ids['project_id']}",
        json={
            "create_permission": False,
            "read_permission": True,
            "update_permission": False,
            "delete_permission": False,
        },
    )
    ids["userpermission_id"] = (await response.json())["userpermission_id"]
    return ids


# A change each kind of record accepts.
CHANGES = {
    "project": {"description": "changed"},
    "experiment": {"description": "changed"},
    "iteration": {"notes": "changed"},
    "resource": {"description": "changed"},
    "model": {"description": "changed"},
    "modelversion": {"description": "changed"},
    "user": {"first_name": "Changed"},
    "userpermission": {"update_permission": True},
}


def _path(ids: dict[str, int], kind: str) -> str:
    return f"/{kind}/{ids[f'{kind}_id']}"


async def _etag(api: Any, path: str) -> str:
    response = await api.get(path)
    await response.read()
    assert response.status == 200
    return str(response.headers["ETag"])


@pytest.mark.parametrize("kind", sorted(CHANGES))
async def test_every_record_carries_its_revision_as_a_strong_etag(
    api: TestClient, kind: str
) -> None:
    ids = await _world(api)
    path = _path(ids, kind)

    response = await api.get(path)
    body = await response.json()

    assert body["revision"] == 1
    assert response.headers["ETag"] == f'"{body["id"]}-1"'


@pytest.mark.parametrize("kind", sorted(CHANGES))
async def test_every_change_moves_the_revision_and_the_etag(
    api: TestClient, kind: str
) -> None:
    ids = await _world(api)
    path = _path(ids, kind)
    before = await _etag(api, path)

    await patch_json(api, path, CHANGES[kind])

    body = await get_json(api, path)
    assert body["revision"] == 2
    assert await _etag(api, path) != before


async def test_empty_patch_keeps_the_revision(api: TestClient) -> None:
    ids = await _world(api)
    path = _path(ids, "model")

    await patch_json(api, path, {})
    await patch_json(api, path, {"name": None, "description": None})

    assert (await get_json(api, path))["revision"] == 1


@pytest.mark.parametrize("kind", sorted(CHANGES))
async def test_patch_with_a_stale_etag_is_412_and_changes_nothing(
    api: TestClient, mongo: Any, settings: Settings, kind: str
) -> None:
    ids = await _world(api)
    path = _path(ids, kind)
    stale = await _etag(api, path)
    await patch_json(api, path, CHANGES[kind])
    current = await _etag(api, path)
    before = await contents(database(mongo, settings))

    response = await api.patch(path, json=CHANGES[kind], headers={"If-Match": stale})
    body = await response.json()

    assert response.status == 412
    assert body["code"] == "PRECONDITION_FAILED"
    assert current in body["message"]
    assert response.headers["ETag"] == current
    assert await contents(database(mongo, settings)) == before


@pytest.mark.parametrize("kind", sorted(CHANGES))
async def test_patch_and_delete_with_the_current_etag_succeed(
    api: TestClient, kind: str
) -> None:
    ids = await _world(api)
    path = _path(ids, kind)

    changed = await api.patch(
        path, json=CHANGES[kind], headers={"If-Match": await _etag(api, path)}
    )
    deleted = await api.delete(path, headers={"If-Match": await _etag(api, path)})

    assert (changed.status, deleted.status) == (200, 200)
    assert (await api.get(path)).status == 404


@pytest.mark.parametrize("kind", sorted(CHANGES))
async def test_delete_with_a_stale_etag_is_412_and_keeps_the_record(
    api: TestClient, mongo: Any, settings: Settings, kind: str
) -> None:
    ids = await _world(api)
    path = _path(ids, kind)
    stale = await _etag(api, path)
    await patch_json(api, path, CHANGES[kind])
    before = await contents(database(mongo, settings))

    message = await refused(
        api, "DELETE", path, 412, "PRECONDITION_FAILED", headers={"If-Match": stale}
    )

    assert "has changed" in message
    assert await contents(database(mongo, settings)) == before


async def test_empty_patch_with_a_stale_etag_is_412(api: TestClient) -> None:
    ids = await _world(api)
    path = _path(ids, "modelversion")
    stale = await _etag(api, path)
    await patch_json(api, path, {"description": "new"})

    await refused(
        api,
        "PATCH",
        path,
        412,
        "PRECONDITION_FAILED",
        json={},
        headers={"If-Match": stale},
    )


@pytest.mark.parametrize(
    "header",
    [
        'W/"{id}-1"',  # weak tags never match
        '"{other}-1"',  # another record's tag
        '"{id}-one"',
        '"{id}"',
        "not-a-tag",
        "",
    ],
)
async def test_if_match_that_names_no_revision_of_the_record_is_412(
    api: TestClient, header: str
) -> None:
    ids = await _world(api)
    path = _path(ids, "model")
    other = ids["model_id"] + 1000

    await refused(
        api,
        "PATCH",
        path,
        412,
        "PRECONDITION_FAILED",
        json={"description": "x"},
        headers={"If-Match": header.format(id=ids["model_id"], other=other)},
    )
    assert (await get_json(api, path))["revision"] == 1


async def test_if_match_lists_and_star_match_an_existing_record(
    api: TestClient,
) -> None:
    ids = await _world(api)
    path = _path(ids, "model")
    current = await _etag(api, path)

    listed = await api.patch(
        path, json={"description": "a"}, headers={"If-Match": f'"0-9", {current}'}
    )
    star = await api.patch(path, json={"description": "b"}, headers={"If-Match": "*"})
    missing = await api.patch(
        "/model/999", json={"description": "c"}, headers={"If-Match": "*"}
    )

    assert (listed.status, star.status, missing.status) == (200, 200, 404)


async def test_stale_etag_on_a_missing_record_is_404(caller: Caller) -> None:
    await refused(
        caller,
        "PATCH",
        "/model/999",
        404,
        "NOT_FOUND",
        json={"description": "x"},
        headers={"If-Match": '"999-1"'},
    )


async def test_if_none_match_on_a_record_is_304(api: TestClient) -> None:
    ids = await _world(api)
    path = _path(ids, "experiment")
    etag = await _etag(api, path)

    response = await api.get(path, headers={"If-None-Match": etag})

    assert response.status == 304
    assert await response.read() == b""


async def test_auto_archived_version_refuses_the_etag_read_before(
    caller: Caller,
) -> None:
    ids = await lineage(caller)
    incumbent = await register(caller, ids["model_id"], ids["iteration_id"])
    challenger = await register(caller, ids["model_id"], ids["iteration_id"])
    await patch_json(caller, f"/modelversion/{incumbent}", {"stage_id": PRODUCTION})
    read_before = await _etag(caller, f"/modelversion/{incumbent}")

    await patch_json(caller, f"/modelversion/{challenger}", {"stage_id": PRODUCTION})

    await refused(
        caller,
        "PATCH",
        f"/modelversion/{incumbent}",
        412,
        "PRECONDITION_FAILED",
        json={"description": "still serving?"},
        headers={"If-Match": read_before},
    )
    assert (await get_json(caller, f"/modelversion/{incumbent}"))["revision"] == 3


async def test_promotion_with_a_stale_etag_changes_nothing(
    caller: Caller, mongo: Any, settings: Settings
) -> None:
    ids = await lineage(caller)
    incumbent = await register(caller, ids["model_id"], ids["iteration_id"])
    challenger = await register(caller, ids["model_id"], ids["iteration_id"])
    await patch_json(caller, f"/modelversion/{incumbent}", {"stage_id": PRODUCTION})
    stale = await _etag(caller, f"/modelversion/{challenger}")
    await patch_json(caller, f"/modelversion/{challenger}", {"description": "d"})
    before = await contents(database(mongo, settings))

    await refused(
        caller,
        "PATCH",
        f"/modelversion/{challenger}",
        412,
        "PRECONDITION_FAILED",
        json={"stage_id": PRODUCTION},
        headers={"If-Match": stale},
    )

    assert await contents(database(mongo, settings)) == before


async def test_concurrent_patches_with_one_etag_one_wins(caller: Caller) -> None:
    ids = await lineage(caller)
    version_id = await register(caller, ids["model_id"], ids["iteration_id"])
    path = f"/modelversion/{version_id}"
    etag = await _etag(caller, path)
    _read_slowly(caller.api.app[keys.SERVICES].store, "modelversions")

    async def patch(description: str) -> int:
        response = await caller.patch(
            path, json={"description": description}, headers={"If-Match": etag}
        )
        await response.read()
        return response.status

    statuses = await asyncio.gather(patch("first"), patch("second"))

    assert sorted(statuses) == [200, 412]
    assert (await get_json(caller, path))["revision"] == 2


def _read_slowly(store: Any, collection: str) -> None:
    """Make every read of ``collection`` linger after it has read, so that
    both of two racing requests read before either writes: only the
    compare-and-set in the write itself can then refuse the second."""
    for name in ("get", "find_one"):
        read = getattr(store, name)

        async def lingering(*args: Any, _read: Any = read, **kwargs: Any) -> Any:
            found = await _read(*args, **kwargs)
            if args and args[0] == collection:
                await asyncio.sleep(0.02)
            return found

        setattr(store, name, lingering)


async def test_record_stored_before_revisions_reads_as_revision_zero(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    ids = await lineage(api)
    models = database(mongo, settings).models
    await models.update_one({"_id": ids["model_id"]}, {"$unset": {"revision": ""}})
    path = _path(ids, "model")

    legacy = await api.get(path)
    await api.patch(
        path, json={"description": "x"}, headers={"If-Match": legacy.headers["ETag"]}
    )

    assert (await legacy.json())["revision"] == 0
    assert legacy.headers["ETag"] == f'"{ids["model_id"]}-0"'
    assert (await get_json(api, path))["revision"] == 1


# With authentication on ---------------------------------------------------


async def test_if_match_tells_nothing_to_a_caller_who_cannot_read(
    admin: Caller, make_user: Any
) -> None:
    ids = await lineage(admin)
    stranger = await make_user("stranger")
    writes: list[Callable[[], Awaitable[Any]]] = [
        lambda: stranger.patch(
            f"/model/{ids['model_id']}",
            json={"description": "x"},
            headers={"If-Match": '"1-99"'},
        ),
        lambda: stranger.delete(
            f"/model/{ids['model_id']}", headers={"If-Match": '"1-99"'}
        ),
    ]

    for write in writes:
        response = await write()
        assert response.status == 404, await response.json()


# The client -------------------------------------------------------------------


async def test_client_updates_and_deletes_only_what_it_read(caller: Caller) -> None:
    ids = await lineage(caller)

    async with connect(url_of(caller), token=caller.token) as client:
        read = await client.get_model(ids["model_id"])
        assert read is not None
        await client.update_model(read.id, description="mine", if_match=read)
        stale = await refusal(client.update_model(read.id, name="x", if_match=read))
        stale_delete = await refusal(client.delete_model(read.id, if_match=read.etag))
        current = await client.get_model(read.id)
        assert current is not None
        await client.delete_model(current.id, if_match=current)
        gone = await client.get_model(read.id)

    assert (stale.status, stale.code) == (412, "PRECONDITION_FAILED")
    assert stale.etag == current.etag == f'"{read.id}-2"'
    assert stale_delete.code == "PRECONDITION_FAILED"
    assert current.description == "mine" and gone is None


@pytest.mark.parametrize(
    "method",
    [
        "update_project",
        "update_experiment",
        "update_iteration",
        "update_resource",
        "update_model",
        "update_modelversion",
        "update_user",
        "update_userpermission",
        "delete_project",
        "delete_experiment",
        "delete_iteration",
        "delete_resource",
        "delete_model",
        "delete_modelversion",
        "delete_user",
        "delete_userpermission",
    ],
)
async def test_every_client_update_and_delete_takes_if_match(
    api: TestClient, method: str
) -> None:
    ids = await _world(api)
    kind = method.partition("_")[2]
    stale = f'"{ids[f"{kind}_id"]}-99"'

    async with connect(str(api.make_url(""))) as client:
        error = await refusal(
            getattr(client, method)(ids[f"{kind}_id"], if_match=stale)
        )

    assert (error.status, error.code) == (412, "PRECONDITION_FAILED")


async def refusal(call: Any) -> ClientError:
    """The ClientError a call raises."""
    with pytest.raises(ClientError) as caught:
        await call
    return caught.value


async def test_model_delete_whose_etag_goes_stale_mid_delete_keeps_its_versions(
    api: TestClient, mongo: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await _world(api)
    path = f"/model/{ids['model_id']}"
    etag = await _etag(api, path)
    models = api.app[keys.SERVICES].models
    load = models._load

    async def load_then_change(*args: Any, **kwargs: Any) -> Any:
        # Another client's PATCH lands between the delete's read and its
        # writes (the unit-test store has no transactions to stop it).
        doc = await load(*args, **kwargs)
        await database(mongo, settings).models.update_one(
            {"_id": ids["model_id"]}, {"$inc": {"revision": 1}}
        )
        return doc

    monkeypatch.setattr(models, "_load", load_then_change)

    await refused(
        api, "DELETE", path, 412, "PRECONDITION_FAILED", headers={"If-Match": etag}
    )

    versions = await get_json(api, f"/modelversion/model/{ids['model_id']}")
    assert versions["total"] == 1
