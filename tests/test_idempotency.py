"""Safe retries: the Idempotency-Key header on creates and updates."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer

from app import keys
from app.client import connect
from app.indexes import load_specs
from app.server import create_app
from app.settings import ConfigError, Settings, load_settings
from app.web.routes import ROUTES
from tests.auth_modes import MODES, member_of, serve_as, url_of
from tests.conftest import USER_PASSWORD, Caller, grant
from tests.helpers import (
    call,
    database,
    get_json,
    lineage,
    make_project,
    patch_json,
    post_json,
    register,
)

KEY = "Idempotency-Key"
PRODUCTION = 3


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test settings with a cheap bcrypt cost, for users made here."""
    return settings.model_copy(update={"bcrypt_rounds": 4})


async def _send(api: Any, method: str, path: str, key: str, **kwargs: Any) -> Any:
    headers = {KEY: key, **kwargs.pop("headers", {})}
    response = await api.request(method, path, headers=headers, **kwargs)
    return response, await response.json()


async def _keys(mongo: Any, settings: Settings) -> list[dict[str, Any]]:
    cursor = database(mongo, settings).idempotency_keys.find({})
    return list(await cursor.to_list(length=None))


async def _models(api: TestClient, project_id: int) -> list[int]:
    page = await get_json(api, f"/model/project/{project_id}")
    return [model["id"] for model in page["data"]]


async def test_repeat_with_the_same_key_replays_the_first_answer(
    caller: Caller,
) -> None:
    project_id = await make_project(caller)
    path = f"/model/project/{project_id}"

    first, created = await _send(caller, "POST", path, "k-1", json={"name": "clf"})
    again, replayed = await _send(caller, "POST", path, "k-1", json={"name": "clf"})

    assert (first.status, again.status) == (201, 201)
    assert replayed == created
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await _models(caller, project_id) == [created["model_id"]]


async def test_replayed_patch_changes_nothing_again(caller: Caller) -> None:
    ids = await lineage(caller)
    version_id = await register(caller, ids["model_id"], ids["iteration_id"])
    path = f"/modelversion/{version_id}"
    promote = {"json": {"stage_id": PRODUCTION}}
    await _send(caller, "PATCH", path, "promote-1", **promote)
    await patch_json(caller, path, {"stage_id": 2})

    again, body = await _send(caller, "PATCH", path, "promote-1", **promote)

    assert (again.status, body) == (200, {"message": "UPDATED"})
    assert again.headers["Idempotent-Replayed"] == "true"
    version = await get_json(caller, path)
    assert (version["stage_id"], version["revision"]) == (2, 3)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/model/project/{project_id}", {"name": "other"}),
        ("POST", "/experiment/project/{project_id}", {"name": "clf"}),
        ("PATCH", "/model/{model_id}", {"name": "clf"}),
    ],
)
async def test_same_key_for_another_request_is_422(
    caller: Caller, method: str, path: str, body: dict[str, Any]
) -> None:
    ids = await lineage(caller)
    first = f"/model/project/{ids['project_id']}"
    _, created = await _send(caller, "POST", first, "k-2", json={"name": "fresh"})

    response, envelope = await _send(
        caller, method, path.format(**ids), "k-2", json=body
    )

    assert response.status == 422
    assert envelope["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert envelope["message"].startswith("Idempotency-Key:")
    models = await _models(caller, ids["project_id"])
    assert models == [ids["model_id"], created["model_id"]]
    assert (await get_json(caller, f"/model/{ids['model_id']}"))["revision"] == 1


async def test_a_refused_request_leaves_no_key_behind(
    caller: Caller, mongo: Any, settings: Settings
) -> None:
    project_id = await make_project(caller)
    path = f"/model/project/{project_id}"
    await post_json(caller, path, {"name": "taken"})

    refused, _ = await _send(caller, "POST", path, "k-3", json={"name": "taken"})
    keys_after_refusal = await _keys(mongo, settings)
    fixed, _ = await _send(caller, "POST", path, "k-3", json={"name": "free"})

    assert (refused.status, fixed.status) == (409, 201)
    assert keys_after_refusal == []
    assert "Idempotent-Replayed" not in fixed.headers


async def test_an_invalid_body_claims_no_key(
    caller: Caller, mongo: Any, settings: Settings
) -> None:
    project_id = await make_project(caller)

    response, _ = await _send(
        caller, "POST", f"/model/project/{project_id}", "k-4", json={"name": ""}
    )

    assert response.status == 422
    assert await _keys(mongo, settings) == []


async def test_repeat_while_the_first_runs_is_409_with_retry_after(
    caller: Caller,
) -> None:
    project_id = await make_project(caller)
    path = f"/model/project/{project_id}"
    models = caller.api.app[keys.SERVICES].models
    release = asyncio.Event()
    create = models.create

    async def slow_create(*args: Any) -> Any:
        await release.wait()
        return await create(*args)

    models.create = slow_create
    first = asyncio.ensure_future(
        _send(caller, "POST", path, "k-5", json={"name": "a"})
    )
    await asyncio.sleep(0.05)

    busy, envelope = await _send(caller, "POST", path, "k-5", json={"name": "a"})
    release.set()
    done, created = await first
    later, replayed = await _send(caller, "POST", path, "k-5", json={"name": "a"})

    assert busy.status == 409
    assert envelope["code"] == "IDEMPOTENCY_KEY_IN_FLIGHT"
    assert busy.headers["Retry-After"] == "1"
    assert (done.status, later.status, replayed) == (201, 201, created)


async def test_twenty_concurrent_registrations_with_one_key_make_one_version(
    caller: Caller,
) -> None:
    ids = await lineage(caller)
    path = f"/modelversion/model/{ids['model_id']}"
    body = {"iteration_id": ids["iteration_id"]}

    answers = await asyncio.gather(
        *(_send(caller, "POST", path, "register-once", json=body) for _ in range(20))
    )
    retried, last = await _send(caller, "POST", path, "register-once", json=body)

    statuses = [response.status for response, _ in answers]
    created = [payload for response, payload in answers if response.status == 201]
    assert set(statuses) <= {201, 409} and created, statuses
    assert all(payload == created[0] for payload in created)
    assert (retried.status, last) == (201, created[0])
    page = await get_json(caller, path)
    assert [v["id"] for v in page["data"]] == [created[0]["modelversion_id"]]


async def test_keys_of_two_users_never_collide(admin: Caller, make_user: Any) -> None:
    project_id = await make_project(admin)
    alice = await make_user("alice", {project_id: "rc"})
    bob = await make_user("bob", {project_id: "rc"})
    path = f"/model/project/{project_id}"

    by_alice, a = await _send(alice, "POST", path, "same", json={"name": "a"})
    by_bob, b = await _send(bob, "POST", path, "same", json={"name": "b"})

    assert (by_alice.status, by_bob.status) == (201, 201)
    assert a != b
    assert "Idempotent-Replayed" not in by_bob.headers


async def test_answer_is_kept_for_the_configured_time(
    settings: Settings, mongo: Any
) -> None:
    configured = settings.model_copy(update={"idempotency_ttl_seconds": 120})
    app = create_app(configured, client=mongo)
    async with TestClient(TestServer(app)) as api:
        await _send(api, "POST", "/project", "k-6", json={"name": "p"})

    [stored] = await _keys(mongo, configured)
    expires = stored["expires_at"].replace(tzinfo=UTC)
    left = expires - datetime.now(UTC)
    assert timedelta(seconds=100) < left <= timedelta(seconds=120)
    assert stored["state"] == "done"


async def test_expired_key_is_claimed_afresh(
    caller: Caller, mongo: Any, settings: Settings
) -> None:
    project_id = await make_project(caller)
    path = f"/model/project/{project_id}"
    await _send(caller, "POST", path, "k-7", json={"name": "first"})
    past = datetime.now(UTC) - timedelta(seconds=1)
    await database(mongo, settings).idempotency_keys.update_many(
        {}, {"$set": {"expires_at": past}}
    )

    response, _ = await _send(caller, "POST", path, "k-7", json={"name": "second"})

    assert response.status == 201
    assert len(await _models(caller, project_id)) == 2


def test_keys_expire_through_a_ttl_index() -> None:
    specs = {(s.collection, s.name): s for s in load_specs()}

    spec = specs[("idempotency_keys", "expires_ttl")]

    assert spec.keys == [("expires_at", 1)]
    assert spec.options == {"expireAfterSeconds": 0}


@pytest.mark.parametrize("key", ["", "k" * 256, "tab\there"])
async def test_a_key_that_is_not_printable_ascii_is_422(
    api: TestClient, key: str
) -> None:
    response, envelope = await _send(api, "POST", "/project", key, json={"name": "p"})

    assert response.status == 422
    assert envelope["code"] == "INVALID_PAYLOAD"
    assert envelope["message"].startswith("Idempotency-Key:")


async def test_writes_without_a_key_store_none(
    caller: Caller, mongo: Any, settings: Settings
) -> None:
    await lineage(caller)

    assert await _keys(mongo, settings) == []


# Every create and update honours the key ----------------------------------


def _form(data: bytes = b"\x00" * 1000) -> FormData:
    form = FormData()
    form.add_field("name", "weights")
    form.add_field("file", data, filename="w.bin")
    return form


async def test_same_key_for_an_upload_of_other_bytes_is_422(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    ids = await lineage(api)
    path = f"/resource/experiment/{ids['experiment_id']}"
    first, _ = await _send(api, "POST", path, "k-up", data=_form(b"first"))
    db = database(mongo, settings)
    stored = await db.resources.count_documents({})

    again, body = await _send(api, "POST", path, "k-up", data=_form(b"second"))

    assert first.status == 201
    assert (again.status, body["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
    assert await db.resources.count_documents({}) == stored


async def test_same_key_for_an_upload_whose_resource_is_gone_replays(
    api: TestClient,
) -> None:
    ids = await lineage(api)
    path = f"/resource/experiment/{ids['experiment_id']}"
    _, created = await _send(api, "POST", path, "k-gone", data=_form(b"one"))
    await call(api, "DELETE", f"/resource/{created['resource_id']}", 200)

    again, replayed = await _send(api, "POST", path, "k-gone", data=_form(b"one"))

    assert (again.status, replayed) == (201, created)
    assert again.headers["Idempotent-Replayed"] == "true"


# method, route, path template, body arguments (a fresh FormData per send).
WRITES: list[tuple[str, str, str, Any]] = [
    ("POST", "/project", "/project", {"json": {"name": "p2"}}),
    (
        "POST",
        "/experiment/project/{id}",
        "/experiment/project/{project_id}",
        {"json": {"name": "e2"}},
    ),
    (
        "POST",
        "/iteration/experiment/{id}",
        "/iteration/experiment/{experiment_id}",
        {"json": {}},
    ),
    ("POST", "/resource/experiment/{id}", "/resource/experiment/{experiment_id}", None),
    (
        "POST",
        "/model/project/{id}",
        "/model/project/{project_id}",
        {"json": {"name": "m2"}},
    ),
    (
        "POST",
        "/modelversion/model/{id}",
        "/modelversion/model/{model_id}",
        {"json": {"iteration_id": 0}},
    ),
    ("POST", "/user", "/user", {"json": {"username": "u", "password": USER_PASSWORD}}),
    (
        "POST",
        "/userpermission/user/{user_id}/project/{project_id}",
        "/userpermission/user/{user_id}/project/{project_id}",
        {
            "json": {
                f"{flag}_permission": True
                for flag in ("create", "read", "update", "delete")
            }
        },
    ),
    ("PATCH", "/project/{id}", "/project/{project_id}", {"json": {"description": "d"}}),
    (
        "PATCH",
        "/experiment/{id}",
        "/experiment/{experiment_id}",
        {"json": {"description": "d"}},
    ),
    ("PATCH", "/iteration/{id}", "/iteration/{iteration_id}", {"json": {"notes": "n"}}),
    (
        "PATCH",
        "/resource/{id}",
        "/resource/{resource_id}",
        {"json": {"description": "d"}},
    ),
    ("PATCH", "/model/{id}", "/model/{model_id}", {"json": {"description": "d"}}),
    (
        "PATCH",
        "/modelversion/{id}",
        "/modelversion/{modelversion_id}",
        {"json": {"stage_id": 3}},
    ),
    ("PATCH", "/user/{id}", "/user/{user_id}", {"json": {"first_name": "U"}}),
    (
        "PATCH",
        "/userpermission/{id}",
        "/userpermission/{userpermission_id}",
        {"json": {"delete_permission": False}},
    ),
]


def test_the_route_table_marks_every_create_and_update_idempotent() -> None:
    marked = {
        (route.method, route.path.replace(":[0-9]+", ""))
        for route in ROUTES
        if route.idempotent
    }

    assert marked == {(method, route) for method, route, _, _ in WRITES}


async def _ids_for_writes(api: TestClient) -> dict[str, int]:
    ids = await lineage(api)
    ids["modelversion_id"] = await register(api, ids["model_id"], ids["iteration_id"])
    response = await api.post(
        f"/resource/experiment/{ids['experiment_id']}", data=_form()
    )
    ids["resource_id"] = (await response.json())["resource_id"]
    user = await post_json(
        api, "/user", {"username": "target", "password": USER_PASSWORD}
    )
    ids["user_id"] = user["user_id"]
    other = await make_project(api, "other")
    grant = await post_json(
        api,
        f"/userpermission/user/{ids['user_id']}/project/{other}",
        {
            f"{flag}_permission": False
            for flag in ("create", "read", "update", "delete")
        },
    )
    ids["userpermission_id"] = grant["userpermission_id"]
    return ids


@pytest.mark.parametrize(
    ("method", "route", "template", "body"),
    WRITES,
    ids=[f"{method} {route}" for method, route, _, _ in WRITES],
)
async def test_every_create_and_update_replays_its_first_answer(
    api: TestClient,
    mongo: Any,
    settings: Settings,
    method: str,
    route: str,
    template: str,
    body: Any,
) -> None:
    ids = await _ids_for_writes(api)
    path = template.format(**ids)
    if body is not None and body.get("json", {}).get("iteration_id") == 0:
        body = {"json": {"iteration_id": ids["iteration_id"]}}
    db = database(mongo, settings)

    def arguments() -> dict[str, Any]:
        return {"data": _form()} if body is None else dict(body)

    first, answer = await _send(api, method, path, f"key {route}", **arguments())
    counts = {name: await db[name].count_documents({}) for name in _RECORDS}
    again, replayed = await _send(api, method, path, f"key {route}", **arguments())

    assert first.status in (200, 201), answer
    assert (again.status, replayed) == (first.status, answer)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers.get("Location") == first.headers.get("Location")
    assert {name: await db[name].count_documents({}) for name in _RECORDS} == counts


_RECORDS = (
    "projects",
    "experiments",
    "iterations",
    "resources",
    "fs.files",
    "models",
    "modelversions",
    "modelversion_events",
    "users",
    "userpermissions",
)


# A retry after the connection dropped ----------------------------------------


@pytest.fixture(params=MODES)
async def dropping(
    request: pytest.FixtureRequest, settings: Settings, mongo: Any
) -> AsyncIterator[tuple[Caller, list[str]]]:
    """The app, dropping the connection after the first keyed write has
    run, its answer unsent; and the keys of the writes dropped."""
    dropped: list[str] = []

    @web.middleware
    async def drop_first_answer(request: web.Request, handler: Any) -> Any:
        response = await handler(request)
        if KEY in request.headers and not dropped:
            dropped.append(request.headers.get(KEY, ""))
            assert request.transport is not None
            request.transport.close()
        return response

    mode = request.param
    async with serve_as(mode, settings, mongo, [drop_first_answer]) as caller:
        yield caller, dropped


async def test_retry_after_the_connection_dropped_after_commit_replays(
    dropping: tuple[Caller, list[str]], mongo: Any, settings: Settings
) -> None:
    caller, dropped = dropping
    project_id = await make_project(caller)

    async with connect(url_of(caller), token=caller.token) as client:
        model_id = await client.create_model(project_id, "clf")

    assert dropped and dropped[0]
    assert await _models(caller, project_id) == [model_id]
    [stored] = await _keys(mongo, settings)
    assert stored["_id"].endswith(f":{dropped[0]}") and stored["state"] == "done"


@pytest.mark.parametrize("source", ["bytes", "stream"])
async def test_upload_retried_after_a_dropped_connection_stores_one_resource(
    dropping: tuple[Caller, list[str]], source: str
) -> None:
    caller, dropped = dropping
    ids = await lineage(caller)
    data = b"weights" * 10_000
    upload = data if source == "bytes" else io.BytesIO(data)

    async with connect(url_of(caller), token=caller.token) as client:
        resource_id = await client.create_resource(ids["experiment_id"], "w", upload)
        listed = await client.get_resources(ids["experiment_id"])
        stored = io.BytesIO()
        await client.download_resource(resource_id, stored)

    assert dropped and [r.id for r in listed] == [resource_id]
    assert stored.getvalue() == data


async def test_with_auth_off_passwords_are_left_out_of_the_fingerprint(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    first = {"username": "carol", "password": "first-password"}
    second = {"username": "carol", "password": "other-password"}

    created, body = await _send(api, "POST", "/user", "k-8", json=first)
    again, replayed = await _send(api, "POST", "/user", "k-8", json=second)
    renamed, _ = await _send(
        api, "POST", "/user", "k-8", json={**first, "username": "dave"}
    )

    assert (created.status, again.status, replayed) == (201, 201, body)
    assert renamed.status == 422
    assert len(await _keys(mongo, settings)) == 1


# Failed requests, users and configuration ----------------------------------


async def _refusals(caller: Caller) -> list[tuple[str, str, dict[str, Any], int]]:
    """Keyed writes the API refuses with a 4xx: method, path, arguments,
    status. Each is refused for a reason its body does not carry."""
    ids = await lineage(caller)
    version_id = await register(caller, ids["model_id"], ids["iteration_id"])
    version = f"/modelversion/{version_id}"
    stale = {"If-Match": f'"{version_id}-99"'}
    return [
        ("PATCH", "/modelversion/999", {"json": {"description": "d"}}, 404),
        ("PATCH", version, {"json": {"description": "d"}, "headers": stale}, 412),
        (
            "POST",
            f"/model/project/{ids['project_id']}",
            {"json": {"name": "clf"}},  # the name lineage() took
            409,
        ),
        (
            "POST",
            f"/modelversion/model/{ids['model_id']}",
            {"json": {"iteration_id": 999}},
            422,
        ),
    ]


async def test_no_refused_request_leaves_its_key_behind(
    caller: Caller, mongo: Any, settings: Settings
) -> None:
    refusals = await _refusals(caller)

    for number, (method, path, arguments, status) in enumerate(refusals):
        response, envelope = await _send(
            caller, method, path, f"k-{number}", **arguments
        )
        assert response.status == status, envelope

    assert await _keys(mongo, settings) == []


async def test_a_key_freed_by_a_refusal_carries_the_corrected_request(
    caller: Caller,
) -> None:
    ids = await lineage(caller)
    path = f"/modelversion/model/{ids['model_id']}"

    refused, _ = await _send(caller, "POST", path, "k", json={"iteration_id": 999})
    fixed, created = await _send(
        caller, "POST", path, "k", json={"iteration_id": ids["iteration_id"]}
    )
    again, replayed = await _send(
        caller, "POST", path, "k", json={"iteration_id": ids["iteration_id"]}
    )

    assert (refused.status, fixed.status, again.status) == (422, 201, 201)
    assert "Idempotent-Replayed" not in fixed.headers
    assert again.headers["Idempotent-Replayed"] == "true" and replayed == created


async def test_a_forbidden_write_leaves_no_key_behind(
    admin: Caller, make_user: Any, mongo: Any, auth_settings: Settings
) -> None:
    ids = await lineage(admin)
    reader = await make_user("reader", {ids["project_id"]: "r"})
    path = f"/model/{ids['model_id']}"

    forbidden, envelope = await _send(
        reader, "PATCH", path, "k", json={"description": "d"}
    )
    permission = await get_json(
        admin, f"/userpermission/user/{reader.user_id}/project/{ids['project_id']}"
    )
    await patch_json(
        admin, f"/userpermission/{permission['id']}", {"update_permission": True}
    )
    allowed, _ = await _send(reader, "PATCH", path, "k", json={"description": "d"})

    assert (forbidden.status, envelope["code"]) == (403, "PROJECT_PERMISSION_REQUIRED")
    assert allowed.status == 200 and "Idempotent-Replayed" not in allowed.headers
    [stored] = await _keys(mongo, auth_settings)
    assert stored["user_id"] == reader.user_id


async def test_one_key_from_two_users_makes_two_versions(
    auth_api: Any, admin: Caller, mongo: Any, auth_settings: Settings
) -> None:
    ids = await lineage(admin)
    path = f"/modelversion/model/{ids['model_id']}"
    body = {"iteration_id": ids["iteration_id"]}
    alice = await member_of(auth_api, admin, "alice")
    bob = await member_of(auth_api, admin, "bob")
    for member in (alice, bob):
        await grant(admin, int(member.user_id or 0), ids["project_id"], "rc")

    answers = [
        await _send(member, "POST", path, "shared-key", json=body)
        for member in (alice, bob, alice, bob)
    ]

    statuses = [response.status for response, _ in answers]
    replayed = [response.headers.get("Idempotent-Replayed") for response, _ in answers]
    created = [payload["modelversion_id"] for _, payload in answers]
    assert statuses == [201] * 4
    assert replayed == [None, None, "true", "true"]
    assert created[0] != created[1] and created[2:] == created[:2]
    page = await get_json(admin, path)
    assert [v["version"] for v in page["data"]] == [1, 2]
    owners = sorted(key["user_id"] for key in await _keys(mongo, auth_settings))
    assert owners == sorted([alice.user_id, bob.user_id])


def test_the_key_lifetime_is_read_from_the_environment() -> None:
    variable = "DEARDIARY_IDEMPOTENCY_TTL_SECONDS"

    default = load_settings({})
    configured = load_settings({variable: "3600"})

    assert default.idempotency_ttl_seconds == 24 * 3600
    assert configured.idempotency_ttl_seconds == 3600
    for bad in ("0", "59", "soon"):
        with pytest.raises(ConfigError, match=variable):
            load_settings({variable: bad})


async def test_with_auth_on_a_repeat_with_another_password_is_422(
    admin: Caller, mongo: Any, auth_settings: Settings
) -> None:
    first = {"username": "erin", "password": "first-password"}
    second = {"username": "erin", "password": "other-password"}

    created, body = await _send(admin, "POST", "/user", "k-pw", json=first)
    same, replayed = await _send(admin, "POST", "/user", "k-pw", json=first)
    other, refusal = await _send(admin, "POST", "/user", "k-pw", json=second)

    assert (created.status, same.status, replayed) == (201, 201, body)
    assert (other.status, refusal["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
    stored = str(await _keys(mongo, auth_settings))
    assert "first-password" not in stored
