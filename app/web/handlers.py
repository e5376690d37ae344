"""Handlers for the record routes, built from one pattern per verb.

Every kind of record is read, listed, created, updated and deleted the same
way: parse the path and body, call the service, shape the answer. The
builders below make one handler of each shape for a service.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from app import keys
from app.schemas import Body
from app.services import Actor
from app.web import responses
from app.web.parsing import page_bounds, path_id, read_body

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def actor(request: web.Request) -> Actor:
    """The user this request acts for."""
    return request[keys.ACTOR]


def service(request: web.Request, name: str) -> Any:
    """The service named ``name`` (``models``, ``modelversions``, ...)."""
    return getattr(request.app[keys.SERVICES], name)


def fetch(name: str, entity: str) -> Handler:
    """GET /<entity>/{id}: the record."""

    async def handler(request: web.Request) -> web.StreamResponse:
        found = await service(request, name).get(
            actor(request), path_id(request, entity)
        )
        return responses.record(found)

    return handler


def listing(name: str, parent: str | None) -> Handler:
    """GET a page of records, under a parent record or at the top."""

    async def handler(request: web.Request) -> web.StreamResponse:
        limit, offset = page_bounds(request)
        scope = () if parent is None else (path_id(request, parent),)
        page = await service(request, name).page(
            actor(request), *scope, limit=limit, offset=offset
        )
        return responses.record(page)

    return handler


def creation(
    name: str, entity: str, body: type[Body], parent: str | None, prefix: str
) -> Handler:
    """POST a new record, under a parent record or at the top."""

    async def handler(request: web.Request) -> web.StreamResponse:
        scope = () if parent is None else (path_id(request, parent),)
        payload = await read_body(request, body)
        new_id = await service(request, name).create(actor(request), *scope, payload)
        return responses.created(request, entity, new_id, f"{prefix}/{new_id}")

    return handler


def modification(name: str, entity: str, body: type[Body]) -> Handler:
    """PATCH /<entity>/{id}: change the fields the body sets."""

    async def handler(request: web.Request) -> web.StreamResponse:
        id_ = path_id(request, entity)
        payload = await read_body(request, body)
        await service(request, name).update(actor(request), id_, payload)
        return responses.updated()

    return handler


def removal(name: str, entity: str) -> Handler:
    """DELETE /<entity>/{id}."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await service(request, name).delete(actor(request), path_id(request, entity))
        return responses.deleted()

    return handler
