"""Permission records and what they let a user see and do (SPEC 5)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import keys
from tests.conftest import Caller, grant
from tests.helpers import (
    lineage,
    make_experiment,
    make_iteration,
    make_project,
    register,
    upload,
)

ALL = {
    "create_permission": True,
    "read_permission": True,
    "update_permission": True,
    "delete_permission": True,
}


async def answer(response: Any) -> tuple[int, Any]:
    return response.status, await response.json()


# Records -----------------------------------------------------------------


async def test_admin_grants_and_reads_a_permission_record(
    admin: Caller, make_user: Any
) -> None:
    project_id = await make_project(admin)
    alice = await make_user("alice")
    pair = f"/userpermission/user/{alice.user_id}/project/{project_id}"

    response = await admin.post(pair, json=ALL)
    created = await response.json()

    by_pair = await (await admin.get(pair)).json()
    by_id = await (
        await admin.get(f"/userpermission/{created['userpermission_id']}")
    ).json()
    assert response.status == 201
    assert response.headers["Location"] == f"/userpermission/{by_id['id']}"
    assert (
        by_pair
        == by_id
        == {
            "id": created["userpermission_id"],
            "user_id": alice.user_id,
            "project_id": project_id,
            **ALL,
            "revision": 1,
        }
    )


async def test_second_record_for_a_user_and_project_is_409(
    admin: Caller, make_user: Any
) -> None:
    project_id = await make_project(admin)
    alice = await make_user("alice", {project_id: "r"})

    status, body = await answer(
        await admin.post(
            f"/userpermission/user/{alice.user_id}/project/{project_id}", json=ALL
        )
    )

    assert (status, body["code"]) == (409, "CONFLICT")


@pytest.mark.parametrize("missing", ["user", "project"])
async def test_grant_on_a_missing_user_or_project_is_404(
    admin: Caller, make_user: Any, missing: str
) -> None:
    project_id = await make_project(admin)
    alice = await make_user("alice")
    user_id = 9999 if missing == "user" else alice.user_id
    project = 9999 if missing == "project" else project_id

    status, body = await answer(
        await admin.post(f"/userpermission/user/{user_id}/project/{project}", json=ALL)
    )

    assert (status, body["code"]) == (404, "NOT_FOUND")
    assert body["message"].startswith(missing)


@pytest.mark.parametrize(
    "body",
    [
        {key: value for key, value in ALL.items() if key != "read_permission"},
        {**ALL, "read_permission": 1},
        {**ALL, "read_permission": "true"},
        {**ALL, "admin_permission": True},
    ],
)
async def test_invalid_permission_body_is_422(
    admin: Caller, make_user: Any, body: dict[str, Any]
) -> None:
    project_id = await make_project(admin)
    alice = await make_user("alice")

    status, payload = await answer(
        await admin.post(
            f"/userpermission/user/{alice.user_id}/project/{project_id}", json=body
        )
    )

    assert (status, payload["code"]) == (422, "INVALID_PAYLOAD")


async def test_changed_flags_apply_on_the_next_request(
    admin: Caller, make_user: Any
) -> None:
    project_id = await make_project(admin)
    alice = await make_user("alice")
    grant_id = await grant(admin, alice.user_id or 0, project_id, "r")
    before = await alice.post(f"/model/project/{project_id}", json={"name": "m"})

    await admin.patch(f"/userpermission/{grant_id}", json={"create_permission": True})

    after = await alice.post(f"/model/project/{project_id}", json={"name": "m"})
    assert before.status == 403
    assert after.status == 201


async def test_deleted_record_hides_the_project_again(
    admin: Caller, make_user: Any
) -> None:
    project_id = await make_project(admin)
    alice = await make_user("alice")
    grant_id = await grant(admin, alice.user_id or 0, project_id, "r")

    response = await admin.delete(f"/userpermission/{grant_id}")

    assert response.status == 200
    assert (await alice.get(f"/project/{project_id}")).status == 404
    assert (await admin.get(f"/userpermission/{grant_id}")).status == 404


async def test_empty_patch_of_a_missing_record_is_404(admin: Caller) -> None:
    status, body = await answer(await admin.patch("/userpermission/9999", json={}))

    assert (status, body["code"]) == (404, "NOT_FOUND")


async def test_deleting_a_project_deletes_its_permission_records(
    admin: Caller, make_user: Any
) -> None:
    project_id = await make_project(admin)
    alice = await make_user("alice", {project_id: "crud"})

    await admin.delete(f"/project/{project_id}")

    pair = f"/userpermission/user/{alice.user_id}/project/{project_id}"
    assert (await admin.get(pair)).status == 404


# What a user sees --------------------------------------------------------


async def test_project_list_shows_only_readable_projects(
    admin: Caller, make_user: Any
) -> None:
    ids = [await make_project(admin, name) for name in ("a", "b", "c", "d")]
    alice = await make_user("alice", {ids[0]: "r", ids[2]: "rc", ids[3]: "cud"})

    page = await (await alice.get("/project?limit=1&offset=1")).json()

    assert page["total"] == 2
    assert [project["id"] for project in page["data"]] == [ids[2]]


async def test_project_list_of_a_user_without_records_is_empty(
    admin: Caller, make_user: Any
) -> None:
    await make_project(admin)
    alice = await make_user("alice")

    page = await (await alice.get("/project")).json()

    assert (page["total"], page["data"]) == (0, [])


async def test_write_flag_without_read_grants_nothing(
    admin: Caller, make_user: Any
) -> None:
    project_id = await make_project(admin)
    alice = await make_user("alice", {project_id: "cud"})

    status, body = await answer(
        await alice.post(f"/model/project/{project_id}", json={"name": "m"})
    )

    assert (status, body["code"]) == (404, "NOT_FOUND")


HIDDEN = [
    "/project/{project_id}",
    "/model/{model_id}",
    "/model/project/{project_id}",
    "/experiment/{experiment_id}",
    "/iteration/experiment/{experiment_id}",
    "/modelversion/{version_id}",
    "/modelversion/model/{model_id}",
    "/resource/{resource_id}/data",
]


@pytest.mark.parametrize("template", HIDDEN)
async def test_unreadable_record_answers_exactly_like_a_missing_one(
    admin: Caller, make_user: Any, template: str
) -> None:
    ids = await lineage(admin)
    ids["version_id"] = await register(admin, ids["model_id"], ids["iteration_id"])
    ids["resource_id"] = await upload(admin, ids["experiment_id"], b"w")
    other = await make_project(admin, "other")
    alice = await make_user("alice", {other: "crud"})
    path = template.format(**ids)

    hidden = await answer(await alice.get(path))
    await admin.delete(f"/project/{ids['project_id']}")
    missing = await answer(await alice.get(path))

    assert hidden == missing
    assert hidden[0] == 404


# Lineage -----------------------------------------------------------------


@pytest.fixture
async def two_projects(admin: Caller, make_user: Any) -> dict[str, Any]:
    """Alice registers in "mine"; "theirs" has a run and an artifact."""
    mine = await lineage(admin, "mine")
    theirs = await make_project(admin, "theirs")
    experiment = await make_experiment(admin, theirs)
    return {
        "mine": mine,
        "iteration": await make_iteration(admin, experiment),
        "resource": await upload(admin, experiment, b"foreign"),
        "own_resource": await upload(admin, mine["experiment_id"], b"own"),
        "alice": await make_user("alice", {mine["project_id"]: "rcu"}),
        "reader": await make_user("reader", {mine["project_id"]: "rcu", theirs: "r"}),
    }


Attempt = Callable[[Caller, dict[str, Any]], Awaitable[Any]]


async def _register_foreign_iteration(who: Caller, world: dict[str, Any]) -> Any:
    return await who.post(
        f"/modelversion/model/{world['mine']['model_id']}",
        json={"iteration_id": world["iteration"]},
    )


async def _register_foreign_iteration_with_own_resource(
    who: Caller, world: dict[str, Any]
) -> Any:
    return await who.post(
        f"/modelversion/model/{world['mine']['model_id']}",
        json={"iteration_id": world["iteration"], "resource_id": world["own_resource"]},
    )


async def _register_foreign_resource(who: Caller, world: dict[str, Any]) -> Any:
    return await who.post(
        f"/modelversion/model/{world['mine']['model_id']}",
        json={
            "iteration_id": world["mine"]["iteration_id"],
            "resource_id": world["resource"],
        },
    )


async def _attach_foreign_resource(who: Caller, world: dict[str, Any]) -> Any:
    version_id = await register(
        world["admin"], world["mine"]["model_id"], world["mine"]["iteration_id"]
    )
    return await who.patch(
        f"/modelversion/{version_id}", json={"resource_id": world["resource"]}
    )


@pytest.mark.parametrize(
    ("attempt", "gone"),
    [
        (_register_foreign_iteration, "/iteration/{iteration}"),
        (_register_foreign_iteration_with_own_resource, "/iteration/{iteration}"),
        (_register_foreign_resource, "/resource/{resource}"),
        (_attach_foreign_resource, "/resource/{resource}"),
    ],
)
@pytest.mark.parametrize("who", ["alice", "reader"])
async def test_foreign_lineage_answers_like_a_missing_id(
    admin: Caller,
    two_projects: dict[str, Any],
    attempt: Attempt,
    gone: str,
    who: str,
) -> None:
    world = {**two_projects, "admin": admin}

    foreign = await answer(await attempt(world[who], world))
    await admin.delete(gone.format(**world))
    missing = await answer(await attempt(world[who], world))

    assert foreign == missing
    assert foreign[0] == 422
    assert foreign[1]["code"] == "INVALID_PAYLOAD"


# The cost of a check -----------------------------------------------------

COUNTED = (
    "get",
    "find_one",
    "exists",
    "find_all",
    "aggregate",
    "page",
    "insert",
    "update",
    "update_many",
    "delete",
    "bump",
    "seed_counter",
)


def count_store_calls(api: TestClient) -> list[str]:
    """Record every call the app makes to its store, by method name."""
    store = api.app[keys.SERVICES].store
    calls: list[str] = []

    def counting(name: str, method: Any) -> Any:
        @functools.wraps(method)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return await method(*args, **kwargs)

        return wrapper

    for name in COUNTED:
        setattr(store, name, counting(name, getattr(store, name)))
    return calls


@pytest.mark.parametrize(
    ("method", "template", "body"),
    [
        ("GET", "/model/{model_id}", None),
        ("GET", "/modelversion/model/{model_id}", None),
        ("GET", "/project", None),
        ("PATCH", "/model/{model_id}", {"description": "d"}),
        ("POST", "/experiment/project/{project_id}", {"name": "e"}),
    ],
)
async def test_permission_check_costs_one_round_trip(
    api: TestClient,
    auth_api: TestClient,
    admin: Caller,
    make_user: Any,
    method: str,
    template: str,
    body: Any,
) -> None:
    # Both apps share one database; `api` runs with auth off.
    ids = await lineage(admin)
    alice = await make_user("alice", {ids["project_id"]: "crud"})
    path = template.format(**ids)
    without_auth = count_store_calls(api)
    with_auth = count_store_calls(auth_api)

    await api.request(method, path, json=body)
    response = await alice.request(method, path, json=body)

    assert response.status < 300
    assert len(with_auth) == len(without_auth) + 1
    assert with_auth[0] == "aggregate"
