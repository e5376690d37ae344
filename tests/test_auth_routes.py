"""Every route against every role, with authentication on (SPEC 5).

The table names each route of the router once, with the rule that guards
it; a route the router has and the table lacks fails
`test_every_route_of_the_router_is_in_the_table`.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from tests.conftest import USER_PASSWORD, Caller
from tests.helpers import lineage, register, upload

ROLES = ("admin", "none", "r", "rc", "ru", "rd", "no token", "bad token")
# Flags each plain role holds on the world's project, as "crud" letters.
GRANTS = {"none": None, "r": "r", "rc": "rc", "ru": "ru", "rd": "rd"}


@dataclass
class World:
    """A project with one record of each kind, and a caller per role."""

    admin: Caller
    callers: dict[str, Caller]
    ids: dict[str, int]
    names: itertools.count[int] = field(default_factory=itertools.count)

    def name(self, prefix: str) -> str:
        return f"{prefix}{next(self.names)}"

    async def post(self, path: str, **kwargs: Any) -> int:
        response = await self.admin.post(path, **kwargs)
        body = await response.json()
        assert response.status == 201, body
        return int(next(iter(body.values())))


Request = tuple[str, dict[str, Any]]
Build = Callable[[World], Awaitable[Request]]


@dataclass(frozen=True)
class Row:
    method: str
    route: str
    rule: str  # public, any, admin, self, read, create, update or delete
    ok: int
    build: Build


def at(template: str, **kwargs: Any) -> Build:
    """A request to a fixed path naming the world's records."""

    async def build(world: World) -> Request:
        return template.format(**world.ids), dict(kwargs)

    return build


async def _login_body(world: World) -> Request:
    return "/auth", {"json": {"username": "target", "password": USER_PASSWORD}}


async def _new_project(world: World) -> Request:
    return "/project", {"json": {"name": world.name("project")}}


async def _delete_project(world: World) -> Request:
    project_id = await world.post("/project", json={"name": world.name("gone")})
    return f"/project/{project_id}", {}


async def _new_user(world: World) -> Request:
    body = {"username": world.name("user"), "password": USER_PASSWORD}
    return "/user", {"json": body}


async def _delete_user(world: World) -> Request:
    body = {"username": world.name("leaving"), "password": USER_PASSWORD}
    return f"/user/{await world.post('/user', json=body)}", {}


FLAGS = {
    "create_permission": True,
    "read_permission": True,
    "update_permission": False,
    "delete_permission": False,
}


async def _grant_fresh(world: World) -> Request:
    project_id = await world.post("/project", json={"name": world.name("grant")})
    path = f"/userpermission/user/{world.ids['target']}/project/{project_id}"
    return path, {"json": FLAGS}


async def _delete_permission(world: World) -> Request:
    path, kwargs = await _grant_fresh(world)
    return f"/userpermission/{await world.post(path, **kwargs)}", {}


async def _new_model(world: World) -> Request:
    path = f"/model/project/{world.ids['project']}"
    return path, {"json": {"name": world.name("model")}}


async def _upload_form(world: World) -> Request:
    form = FormData()
    form.add_field("name", world.name("weights"))
    form.add_field("file", b"\x00\x01", filename="w.bin")
    return f"/resource/experiment/{world.ids['experiment']}", {"data": form}


async def _delete_experiment(world: World) -> Request:
    path = f"/experiment/project/{world.ids['project']}"
    experiment_id = await world.post(path, json={"name": "short-lived"})
    return f"/experiment/{experiment_id}", {}


async def _delete_iteration(world: World) -> Request:
    path = f"/iteration/experiment/{world.ids['experiment']}"
    return f"/iteration/{await world.post(path, json={})}", {}


async def _delete_resource(world: World) -> Request:
    resource_id = await upload(world.admin, world.ids["experiment"], b"bytes")
    return f"/resource/{resource_id}", {}


async def _delete_model(world: World) -> Request:
    path, kwargs = await _new_model(world)
    return f"/model/{await world.post(path, **kwargs)}", {}


async def _new_version(world: World) -> Request:
    path = f"/modelversion/model/{world.ids['model']}"
    return path, {"json": {"iteration_id": world.ids["iteration"]}}


async def _delete_version(world: World) -> Request:
    version_id = await register(world.admin, world.ids["model"], world.ids["iteration"])
    return f"/modelversion/{version_id}", {}


async def _production(world: World) -> Request:
    response = await world.admin.patch(
        f"/modelversion/{world.ids['version']}", json={"stage_id": 3}
    )
    assert response.status == 200, await response.json()
    return f"/model/{world.ids['model']}/production", {}


DESCRIBE = {"json": {"description": "changed"}}
PAIR = "/userpermission/user/{user_id}/project/{project_id}"

TABLE = [
    Row("GET", "/health", "public", 200, at("/health")),
    Row("GET", "/health/ready", "public", 200, at("/health/ready")),
    Row("GET", "/metrics", "public", 200, at("/metrics")),
    Row("GET", "/openapi.json", "public", 200, at("/openapi.json")),
    Row("GET", "/docs", "public", 200, at("/docs")),
    Row("POST", "/auth", "public", 200, _login_body),
    Row("POST", "/auth/refresh", "any", 200, at("/auth/refresh")),
    Row("GET", "/auth/me", "any", 200, at("/auth/me")),
    # Users and permissions.
    Row("POST", "/user", "admin", 201, _new_user),
    Row("GET", "/user", "admin", 200, at("/user")),
    Row("GET", "/user/{id}", "self", 200, at("/user/{target}")),
    Row(
        "PATCH",
        "/user/{id}",
        "self",
        200,
        at("/user/{target}", json={"first_name": "T"}),
    ),
    Row("DELETE", "/user/{id}", "self", 200, _delete_user),
    Row(
        "GET",
        PAIR,
        "admin",
        200,
        at("/userpermission/user/{target}/project/{project}"),
    ),
    Row("POST", PAIR, "admin", 201, _grant_fresh),
    Row("GET", "/userpermission/{id}", "admin", 200, at("/userpermission/{grant}")),
    Row(
        "PATCH",
        "/userpermission/{id}",
        "admin",
        200,
        at("/userpermission/{grant}", json={"update_permission": True}),
    ),
    Row("DELETE", "/userpermission/{id}", "admin", 200, _delete_permission),
    # Projects.
    Row("GET", "/project", "any", 200, at("/project")),
    Row("GET", "/project/{id}", "read", 200, at("/project/{project}")),
    Row("POST", "/project", "admin", 201, _new_project),
    Row("PATCH", "/project/{id}", "admin", 200, at("/project/{project}", **DESCRIBE)),
    Row("DELETE", "/project/{id}", "admin", 200, _delete_project),
    # Experiments.
    Row("GET", "/experiment/{id}", "read", 200, at("/experiment/{experiment}")),
    Row(
        "GET",
        "/experiment/project/{id}",
        "read",
        200,
        at("/experiment/project/{project}"),
    ),
    Row(
        "POST",
        "/experiment/project/{id}",
        "create",
        201,
        at("/experiment/project/{project}", json={"name": "exp"}),
    ),
    Row(
        "PATCH",
        "/experiment/{id}",
        "update",
        200,
        at("/experiment/{experiment}", **DESCRIBE),
    ),
    Row("DELETE", "/experiment/{id}", "delete", 200, _delete_experiment),
    # Iterations.
    Row("GET", "/iteration/{id}", "read", 200, at("/iteration/{iteration}")),
    Row(
        "GET",
        "/iteration/experiment/{id}",
        "read",
        200,
        at("/iteration/experiment/{experiment}"),
    ),
    Row(
        "POST",
        "/iteration/experiment/{id}",
        "create",
        201,
        at("/iteration/experiment/{experiment}", json={}),
    ),
    Row(
        "PATCH",
        "/iteration/{id}",
        "update",
        200,
        at("/iteration/{iteration}", json={"notes": "n"}),
    ),
    Row("DELETE", "/iteration/{id}", "delete", 200, _delete_iteration),
    # Resources.
    Row("GET", "/resource/{id}", "read", 200, at("/resource/{resource}")),
    Row("GET", "/resource/{id}/data", "read", 200, at("/resource/{resource}/data")),
    Row(
        "GET",
        "/resource/experiment/{id}",
        "read",
        200,
        at("/resource/experiment/{experiment}"),
    ),
    Row("POST", "/resource/experiment/{id}", "create", 201, _upload_form),
    Row(
        "PATCH", "/resource/{id}", "update", 200, at("/resource/{resource}", **DESCRIBE)
    ),
    Row("DELETE", "/resource/{id}", "delete", 200, _delete_resource),
    # Models.
    Row("GET", "/model/{id}", "read", 200, at("/model/{model}")),
    Row("GET", "/model/project/{id}", "read", 200, at("/model/project/{project}")),
    Row("POST", "/model/project/{id}", "create", 201, _new_model),
    Row("PATCH", "/model/{id}", "update", 200, at("/model/{model}", **DESCRIBE)),
    Row("DELETE", "/model/{id}", "delete", 200, _delete_model),
    # Model versions.
    Row("GET", "/modelversion/{id}", "read", 200, at("/modelversion/{version}")),
    Row(
        "GET",
        "/modelversion/model/{id}",
        "read",
        200,
        at("/modelversion/model/{model}"),
    ),
    Row("POST", "/modelversion/model/{id}", "create", 201, _new_version),
    Row(
        "PATCH",
        "/modelversion/{id}",
        "update",
        200,
        at("/modelversion/{version}", json={"stage_id": 3}),
    ),
    Row("DELETE", "/modelversion/{id}", "delete", 200, _delete_version),
    # Production lookup and history.
    Row("GET", "/model/{id}/production", "read", 200, _production),
    Row("GET", "/model/{id}/history", "read", 200, at("/model/{model}/history")),
    Row(
        "GET",
        "/modelversion/{id}/history",
        "read",
        200,
        at("/modelversion/{version}/history"),
    ),
]


def expected(row: Row, role: str) -> tuple[int, str | None]:
    """The status and error code SPEC 5 gives ``role`` on ``row``."""
    if row.rule == "public":
        return row.ok, None
    if role == "no token":
        return 401, "TOKEN_MISSING"
    if role == "bad token":
        return 401, "TOKEN_INVALID"
    if role == "admin" or row.rule == "any":
        return row.ok, None
    if row.rule == "admin":
        return 403, "ADMIN_REQUIRED"
    if row.rule == "self":
        return 403, "SAME_USER_REQUIRED"

    flags = GRANTS[role] or ""
    if "r" not in flags:
        return 404, "NOT_FOUND"
    if row.rule[0] in flags:
        return row.ok, None
    return 403, "PROJECT_PERMISSION_REQUIRED"


def forged_token(user_id: int) -> str:
    """A well-formed token for a real user, signed with another secret."""
    moment = datetime.now(UTC)
    claims = {"sub": str(user_id), "iat": moment, "exp": moment + timedelta(hours=1)}
    return jwt.encode(claims, "another-secret-of-at-least-32-bytes!!", "HS256")


async def build_world(api: TestClient, admin: Caller, make_user: Any) -> World:
    ids = await lineage(admin)
    ids["project"] = ids.pop("project_id")
    ids["experiment"] = ids.pop("experiment_id")
    ids["iteration"] = ids.pop("iteration_id")
    ids["model"] = ids.pop("model_id")
    ids["version"] = await register(admin, ids["model"], ids["iteration"])
    ids["resource"] = await upload(admin, ids["experiment"], b"weights")

    callers = {"admin": admin}
    for role, letters in GRANTS.items():
        grants = {} if letters is None else {ids["project"]: letters}
        callers[role] = await make_user(role, grants)
    target = await make_user("target", {ids["project"]: "r"})
    ids["target"] = int(target.user_id or 0)
    callers["no token"] = Caller(api, None)
    callers["bad token"] = Caller(api, forged_token(ids["target"]))

    response = await admin.get(
        f"/userpermission/user/{ids['target']}/project/{ids['project']}"
    )
    ids["grant"] = (await response.json())["id"]
    return World(admin, callers, ids)


async def _outcome(response: Any) -> tuple[int, str | None]:
    if response.status < 400:
        await response.read()
        return response.status, None
    return response.status, (await response.json())["code"]


@pytest.mark.parametrize("row", TABLE, ids=lambda row: f"{row.method} {row.route}")
async def test_route_answers_every_role_as_spec_5_says(
    row: Row, auth_api: TestClient, admin: Caller, make_user: Any
) -> None:
    world = await build_world(auth_api, admin, make_user)

    outcomes = {}
    for role in ROLES:
        path, kwargs = await row.build(world)
        response = await world.callers[role].request(row.method, path, **kwargs)
        outcomes[role] = await _outcome(response)

    assert outcomes == {role: expected(row, role) for role in ROLES}


async def test_every_route_of_the_router_is_in_the_table(auth_api: TestClient) -> None:
    routed = {
        (route.method, route.resource.canonical)
        for route in auth_api.app.router.routes()
        # HEAD comes with every GET and is checked as that GET.
        if route.resource is not None and route.method != "HEAD"
    }

    tabled = [(row.method, row.route) for row in TABLE]

    assert routed == set(tabled)
    assert len(tabled) == len(set(tabled))
