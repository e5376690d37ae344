"""The route table: every path, method and handler of the API (SPEC 3).

Ids in paths admit digits only, so a path id that is not an integer matches
no route and answers 404.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from app import schemas
from app.web import resources, users
from app.web.handlers import (
    Handler,
    creation,
    fetch,
    listing,
    modification,
    removal,
)


@dataclass(frozen=True)
class Route:
    """One method on one path."""

    method: str
    path: str
    handler: Handler
    summary: str
    public: bool = False


async def health(request: web.Request) -> web.StreamResponse:
    """Liveness: answers without touching the database."""
    return web.json_response({"status": "ok"})


def _record_routes(
    word: str,
    service: str,
    *,
    create: type[schemas.Body],
    update: type[schemas.Body],
    parent: str | None,
) -> list[Route]:
    """The five routes of a kind of record: get, list, create, update, delete."""
    one = f"/{word}/{{id:[0-9]+}}"
    many = f"/{word}" if parent is None else f"/{word}/{parent}/{{id:[0-9]+}}"
    return [
        Route("GET", one, fetch(service, word), f"Get a {word}"),
        Route("GET", many, listing(service, parent), f"List {word}s"),
        Route(
            "POST",
            many,
            creation(service, word, create, parent, f"/{word}"),
            f"Create a {word}",
        ),
        Route("PATCH", one, modification(service, word, update), f"Update a {word}"),
        Route("DELETE", one, removal(service, word), f"Delete a {word}"),
    ]


def _auth_routes() -> list[Route]:
    return [
        Route("POST", "/auth", users.login, "Log in: a token", public=True),
        Route("POST", "/auth/refresh", users.refresh, "A fresh token"),
        Route("GET", "/auth/me", users.me, "The user a token names"),
    ]


def _permission_routes() -> list[Route]:
    pair = "/userpermission/user/{user_id:[0-9]+}/project/{project_id:[0-9]+}"
    one = "/userpermission/{id:[0-9]+}"
    entity = "userpermission"
    return [
        Route("GET", pair, users.permission_of, "A user's permission on a project"),
        Route("POST", pair, users.grant, "Grant a user permission on a project"),
        Route("GET", one, fetch("userpermissions", entity), "Get a permission"),
        Route(
            "PATCH",
            one,
            modification("userpermissions", entity, schemas.UserPermissionUpdate),
            "Update a permission",
        ),
        Route("DELETE", one, removal("userpermissions", entity), "Delete a permission"),
    ]


def _resource_routes() -> list[Route]:
    one = "/resource/{id:[0-9]+}"
    many = "/resource/experiment/{id:[0-9]+}"
    return [
        Route("GET", one, fetch("resources", "resource"), "Get a resource"),
        Route("GET", f"{one}/data", resources.download, "Download its bytes"),
        Route("GET", many, listing("resources", "experiment"), "List resources"),
        Route("POST", many, resources.upload, "Upload a resource (multipart)"),
        Route(
            "PATCH",
            one,
            modification("resources", "resource", schemas.ResourceUpdate),
            "Update a resource",
        ),
        Route("DELETE", one, removal("resources", "resource"), "Delete a resource"),
    ]


ROUTES: list[Route] = [
    Route("GET", "/health", health, "Liveness", public=True),
    *_auth_routes(),
    *_record_routes(
        "user",
        "users",
        create=schemas.UserCreate,
        update=schemas.UserUpdate,
        parent=None,
    ),
    *_permission_routes(),
    *_record_routes(
        "project",
        "projects",
        create=schemas.ProjectCreate,
        update=schemas.ProjectUpdate,
        parent=None,
    ),
    *_record_routes(
        "experiment",
        "experiments",
        create=schemas.ExperimentCreate,
        update=schemas.ExperimentUpdate,
        parent="project",
    ),
    *_record_routes(
        "iteration",
        "iterations",
        create=schemas.IterationCreate,
        update=schemas.IterationUpdate,
        parent="experiment",
    ),
    *_resource_routes(),
    *_record_routes(
        "model",
        "models",
        create=schemas.ModelCreate,
        update=schemas.ModelUpdate,
        parent="project",
    ),
    *_record_routes(
        "modelversion",
        "modelversions",
        create=schemas.ModelVersionCreate,
        update=schemas.ModelVersionUpdate,
        parent="model",
    ),
]


# Routes that answer without a token when authentication is on. They take
# no path parameters, so a path is its own canonical form.
PUBLIC = frozenset((route.method, route.path) for route in ROUTES if route.public)


def add_routes(app: web.Application) -> None:
    """Register every route of the table on ``app``."""
    for route in ROUTES:
        if route.method == "GET":
            # HEAD answers as GET does, without the body (curl -I, probes).
            app.router.add_get(route.path, route.handler)
        else:
            app.router.add_route(route.method, route.path, route.handler)
