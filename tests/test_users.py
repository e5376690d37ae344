"""Users: created and listed by admins, read and changed by themselves."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import USER_PASSWORD, Caller, log_in
from tests.helpers import make_project

NEW_PASSWORD = "new-password-22"


async def status_code(response: Any) -> tuple[int, str | None]:
    body = await response.json()
    return response.status, body.get("code") if response.status >= 400 else None


async def test_admin_creates_a_user_who_is_not_an_admin(admin: Caller) -> None:
    response = await admin.post(
        "/user",
        json={
            "username": "alice",
            "password": USER_PASSWORD,
            "first_name": "Alice",
            "last_name": "Liddell",
        },
    )
    created = await response.json()

    user = await (await admin.get(f"/user/{created['user_id']}")).json()
    assert response.status == 201
    assert response.headers["Location"] == f"/user/{created['user_id']}"
    assert user == {
        "id": created["user_id"],
        "username": "alice",
        "first_name": "Alice",
        "last_name": "Liddell",
        "is_admin": False,
        "created_date": user["created_date"],
        "updated_date": None,
        "revision": 1,
    }


async def test_username_is_stored_trimmed(admin: Caller, auth_api: TestClient) -> None:
    await admin.post("/user", json={"username": " bob ", "password": USER_PASSWORD})

    caller = await log_in(auth_api, "bob", USER_PASSWORD)

    assert caller.token


async def test_second_user_with_the_same_name_is_409(admin: Caller) -> None:
    body = {"username": "alice", "password": USER_PASSWORD}
    await admin.post("/user", json=body)

    response = await admin.post("/user", json=body)

    assert await status_code(response) == (409, "CONFLICT")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "a", "password": "seven77"}, "password"),
        ({"username": "a", "password": "p" * 73}, "password"),
        ({"username": "a", "password": "\u00e9" * 37}, "password"),
        ({"username": "a"}, "password"),
        ({"username": "", "password": USER_PASSWORD}, "username"),
        ({"username": "a\nb", "password": USER_PASSWORD}, "username"),
        ({"username": "a", "password": USER_PASSWORD, "is_admin": True}, "is_admin"),
        ({"username": "a", "password": USER_PASSWORD, "first_name": 3}, "first_name"),
    ],
)
async def test_invalid_user_body_is_422_naming_the_field(
    admin: Caller, body: dict[str, Any], field: str
) -> None:
    response = await admin.post("/user", json=body)

    payload = await response.json()
    assert (response.status, payload["code"]) == (422, "INVALID_PAYLOAD")
    assert payload["message"].startswith(field)


async def test_admin_lists_users_by_id(admin: Caller, make_user: Any) -> None:
    await make_user("alice")
    await make_user("bob")

    page = await (await admin.get("/user?limit=2")).json()

    assert page["total"] == 3
    assert [user["username"] for user in page["data"]] == ["root", "alice"]


async def test_user_reads_their_own_record(make_user: Any) -> None:
    alice = await make_user("alice")

    response = await alice.get(f"/user/{alice.user_id}")

    assert response.status == 200
    assert (await response.json())["username"] == "alice"


async def test_user_cannot_tell_whether_another_user_exists(make_user: Any) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")

    existing = await alice.get(f"/user/{bob.user_id}")
    absent = await alice.get("/user/9999")

    assert await status_code(existing) == (403, "SAME_USER_REQUIRED")
    assert await status_code(absent) == (403, "SAME_USER_REQUIRED")


async def test_me_is_the_callers_record(make_user: Any) -> None:
    alice = await make_user("alice")

    me = await (await alice.get("/auth/me")).json()

    assert me["id"] == alice.user_id
    assert me["username"] == "alice"


async def test_user_changes_their_names_and_updated_date_moves(
    make_user: Any,
) -> None:
    alice = await make_user("alice")

    response = await alice.patch(
        f"/user/{alice.user_id}", json={"first_name": "Al", "last_name": None}
    )

    me = await (await alice.get("/auth/me")).json()
    assert await status_code(response) == (200, None)
    assert (me["first_name"], me["last_name"]) == ("Al", "")
    assert me["updated_date"] is not None


async def test_user_changes_their_password(
    auth_api: TestClient, make_user: Any
) -> None:
    alice = await make_user("alice")

    await alice.patch(f"/user/{alice.user_id}", json={"password": NEW_PASSWORD})

    old = await auth_api.post(
        "/auth", json={"username": "alice", "password": USER_PASSWORD}
    )
    assert old.status == 401
    assert (await log_in(auth_api, "alice", NEW_PASSWORD)).token


@pytest.mark.parametrize("value", [True, False])
async def test_only_an_admin_sets_is_admin(
    admin: Caller, make_user: Any, value: bool
) -> None:
    alice = await make_user("alice")

    response = await alice.patch(
        f"/user/{alice.user_id}", json={"is_admin": value, "first_name": "X"}
    )

    me = await (await admin.get(f"/user/{alice.user_id}")).json()
    assert await status_code(response) == (403, "ADMIN_REQUIRED")
    assert (me["is_admin"], me["first_name"]) == (False, "")


async def test_user_cannot_change_another_user(admin: Caller, make_user: Any) -> None:
    alice = await make_user("alice")

    response = await alice.patch(
        f"/user/{admin.user_id}", json={"password": NEW_PASSWORD}
    )

    assert await status_code(response) == (403, "SAME_USER_REQUIRED")


async def test_promoted_user_acts_as_admin_on_the_next_request(
    admin: Caller, make_user: Any
) -> None:
    alice = await make_user("alice")

    await admin.patch(f"/user/{alice.user_id}", json={"is_admin": True})

    response = await alice.get("/user")
    assert response.status == 200


async def test_last_admin_can_be_neither_demoted_nor_deleted(admin: Caller) -> None:
    demote = await admin.patch(f"/user/{admin.user_id}", json={"is_admin": False})
    delete = await admin.delete(f"/user/{admin.user_id}")

    me = await (await admin.get("/auth/me")).json()
    assert await status_code(demote) == (409, "CONFLICT")
    assert await status_code(delete) == (409, "CONFLICT")
    assert me["is_admin"] is True


async def test_admin_steps_down_once_another_admin_exists(
    admin: Caller, make_user: Any
) -> None:
    alice = await make_user("alice")
    await admin.patch(f"/user/{alice.user_id}", json={"is_admin": True})

    response = await admin.patch(f"/user/{admin.user_id}", json={"is_admin": False})

    assert await status_code(response) == (200, None)
    assert (await admin.get("/user")).status == 403


async def test_user_deletes_themselves_with_their_permissions(
    admin: Caller, make_user: Any
) -> None:
    project_id = await make_project(admin)
    alice = await make_user("alice", {project_id: "r"})
    user_id = alice.user_id

    response = await alice.delete(f"/user/{user_id}")

    grant = await admin.get(f"/userpermission/user/{user_id}/project/{project_id}")
    assert await status_code(response) == (200, None)
    assert grant.status == 404
    assert (await admin.get(f"/user/{user_id}")).status == 404


async def test_admin_deletes_a_user(admin: Caller, make_user: Any) -> None:
    alice = await make_user("alice")

    response = await admin.delete(f"/user/{alice.user_id}")

    assert await status_code(response) == (200, None)
    assert (await alice.get("/auth/me")).status == 401


async def test_deleting_a_missing_user_is_404(admin: Caller) -> None:
    response = await admin.delete("/user/9999")

    assert await status_code(response) == (404, "NOT_FOUND")


async def test_user_routes_work_with_auth_off(api: TestClient) -> None:
    response = await api.post(
        "/user", json={"username": "alice", "password": USER_PASSWORD}
    )
    me = await (await api.get("/auth/me")).json()

    assert response.status == 201
    assert (me["username"], me["is_admin"]) == ("admin", True)
