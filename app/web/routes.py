"""The route table: every path, method and handler of the API (SPEC 3).

Ids in paths admit digits only, so a path id that is not an integer matches
no route and answers 404.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

from app import schemas
from app.web import apipage, resources, users
from app.web.handlers import (
    Filters,
    Handler,
    creation,
    fetch,
    listing,
    modification,
    production,
    removal,
)
from app.web.health import metrics, ready
from app.web.parsing import stage_filter

# The page bounds every list reads.
PAGE_QUERY = ("limit", "offset")


@dataclass(frozen=True)
class Route:
    """One method on one path."""

    method: str
    path: str
    handler: Handler
    summary: str
    public: bool = False
    # For the API's description (app.web.openapi): the JSON body a route
    # reads (with ``upload``, the text parts of its multipart body before
    # the file), the record or page it answers and that answer's media
    # type, the query parameters it reads, whether it honours
    # Idempotency-Key, and whether it answers an ETag and honours
    # If-None-Match.
    body: type[BaseModel] | None = None
    answer: type[BaseModel] | None = None
    idempotent: bool = False
    query: tuple[str, ...] = ()
    etag: bool = False
    upload: bool = False
    media: str = "application/json"


async def health(request: web.Request) -> web.StreamResponse:
    """Liveness: answers without touching the database."""
    return web.json_response({"status": "ok"})


def _record_routes(
    word: str,
    service: str,
    *,
    record: type[schemas.Record],
    create: type[schemas.Body],
    update: type[schemas.Body],
    parent: str | None,
    filters: Filters | None = None,
    query: tuple[str, ...] = (),
) -> list[Route]:
    """The five routes of a kind of record: get, list, create, update, delete.

    ``query`` names the parameters ``filters`` reads.
    """
    one = f"/{word}/{{id:[0-9]+}}"
    many = f"/{word}" if parent is None else f"/{word}/{parent}/{{id:[0-9]+}}"
    return [
        Route(
            "GET",
            one,
            fetch(service, word),
            f"Get a {word}",
            answer=record,
            etag=True,
        ),
        Route(
            "GET",
            many,
            listing(service, parent, filters=filters),
            f"List {word}s",
            answer=schemas.Page[record],  # type: ignore[valid-type]
            query=PAGE_QUERY + query,
        ),
        Route(
            "POST",
            many,
            creation(service, word, create, parent, f"/{word}"),
            f"Create a {word}",
            body=create,
            idempotent=True,
        ),
        Route(
            "PATCH",
            one,
            modification(service, word, update),
            f"Update a {word}",
            body=update,
            idempotent=True,
        ),
        Route("DELETE", one, removal(service, word), f"Delete a {word}"),
    ]


def _registry_routes() -> list[Route]:
    """Production lookup and history, beyond the five of each record."""
    model = "/model/{id:[0-9]+}"
    events = schemas.Page[schemas.ModelVersionEvent]
    return [
        Route(
            "GET",
            f"{model}/production",
            production,
            "The model's PRODUCTION version, now or ?at= a past moment",
            answer=schemas.ModelVersion,
            query=("at",),
            etag=True,
        ),
        Route(
            "GET",
            f"{model}/history",
            listing("models", "model", method="history"),
            "The model's history, oldest first",
            answer=events,
            query=PAGE_QUERY,
        ),
        Route(
            "GET",
            "/modelversion/{id:[0-9]+}/history",
            listing("modelversions", "modelversion", method="history"),
            "A version's history, oldest first",
            answer=events,
            query=PAGE_QUERY,
        ),
    ]


def _auth_routes() -> list[Route]:
    return [
        Route(
            "POST",
            "/auth",
            users.login,
            "Log in: a token",
            public=True,
            body=schemas.Credentials,
            answer=schemas.TokenEnvelope,
        ),
        Route(
            "POST",
            "/auth/refresh",
            users.refresh,
            "A fresh token",
            answer=schemas.TokenEnvelope,
        ),
        Route(
            "GET", "/auth/me", users.me, "The user a token names", answer=schemas.User
        ),
    ]


def _permission_routes() -> list[Route]:
    pair = "/userpermission/user/{user_id:[0-9]+}/project/{project_id:[0-9]+}"
    one = "/userpermission/{id:[0-9]+}"
    entity = "userpermission"
    record = schemas.UserPermission
    return [
        Route(
            "GET",
            pair,
            users.permission_of,
            "A user's permission on a project",
            answer=record,
            etag=True,
        ),
        Route(
            "POST",
            pair,
            users.grant,
            "Grant a user permission on a project",
            body=schemas.UserPermissionCreate,
            idempotent=True,
        ),
        Route(
            "GET",
            one,
            fetch("userpermissions", entity),
            "Get a permission",
            answer=record,
            etag=True,
        ),
        Route(
            "PATCH",
            one,
            modification("userpermissions", entity, schemas.UserPermissionUpdate),
            "Update a permission",
            body=schemas.UserPermissionUpdate,
            idempotent=True,
        ),
        Route("DELETE", one, removal("userpermissions", entity), "Delete a permission"),
    ]


def _resource_routes() -> list[Route]:
    one = "/resource/{id:[0-9]+}"
    many = "/resource/experiment/{id:[0-9]+}"
    return [
        Route(
            "GET",
            one,
            fetch("resources", "resource"),
            "Get a resource",
            answer=schemas.Resource,
            etag=True,
        ),
        Route(
            "GET",
            f"{one}/data",
            resources.download,
            "Download its bytes",
            etag=True,
            media="application/octet-stream",
        ),
        Route(
            "GET",
            many,
            listing("resources", "experiment"),
            "List resources",
            answer=schemas.Page[schemas.Resource],
            query=PAGE_QUERY,
        ),
        # The body is multipart (name, description?, file), not JSON.
        Route(
            "POST",
            many,
            resources.upload,
            "Upload a resource (multipart)",
            body=schemas.ResourceCreate,
            idempotent=True,
            upload=True,
        ),
        Route(
            "PATCH",
            one,
            modification("resources", "resource", schemas.ResourceUpdate),
            "Update a resource",
            body=schemas.ResourceUpdate,
            idempotent=True,
        ),
        Route("DELETE", one, removal("resources", "resource"), "Delete a resource"),
    ]


ROUTES: list[Route] = [
    Route("GET", "/health", health, "Liveness", public=True),
    Route("GET", "/health/ready", ready, "Readiness", public=True),
    Route(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics",
        public=True,
        media="text/plain",
    ),
    Route(
        "GET",
        "/openapi.json",
        apipage.document,
        "This API, as OpenAPI 3.1",
        public=True,
    ),
    Route(
        "GET",
        "/docs",
        apipage.page,
        "This API, as a page to read",
        public=True,
        media="text/html",
    ),
    *_auth_routes(),
    *_record_routes(
        "user",
        "users",
        record=schemas.User,
        create=schemas.UserCreate,
        update=schemas.UserUpdate,
        parent=None,
    ),
    *_permission_routes(),
    *_record_routes(
        "project",
        "projects",
        record=schemas.Project,
        create=schemas.ProjectCreate,
        update=schemas.ProjectUpdate,
        parent=None,
    ),
    *_record_routes(
        "experiment",
        "experiments",
        record=schemas.Experiment,
        create=schemas.ExperimentCreate,
        update=schemas.ExperimentUpdate,
        parent="project",
    ),
    *_record_routes(
        "iteration",
        "iterations",
        record=schemas.Iteration,
        create=schemas.IterationCreate,
        update=schemas.IterationUpdate,
        parent="experiment",
    ),
    *_resource_routes(),
    *_record_routes(
        "model",
        "models",
        record=schemas.Model,
        create=schemas.ModelCreate,
        update=schemas.ModelUpdate,
        parent="project",
    ),
    *_record_routes(
        "modelversion",
        "modelversions",
        record=schemas.ModelVersion,
        create=schemas.ModelVersionCreate,
        update=schemas.ModelVersionUpdate,
        parent="model",
        filters=stage_filter,
        query=("stage_id",),
    ),
    *_registry_routes(),
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
