"""Handlers for the record routes, built from one pattern per verb.

Every kind of record is read, listed, created, updated and deleted the same
way: parse the path and body, call the service, shape the answer. The
builders below make one handler of each shape for a service.

- A read answers the record's revision as a strong ETag.
- An update or delete honours If-Match: the revisions it names travel into
  the service's write, which checks them in the same step (412 if stale).
- A create or update honours Idempotency-Key (see `app.web.idempotency`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from app import keys
from app.schemas import Body
from app.services import Actor
from app.web import responses
from app.web.idempotency import once
from app.web.parsing import if_match, moment, page_bounds, path_id, read_body

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Extra keyword arguments of a list call, read from the query string.
Filters = Callable[[web.Request], dict[str, Any]]

# Serving code asks often; it may keep the answer but must check it is
# still current (If-None-Match) before using it.
PRODUCTION_CACHE = "private, no-cache"


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
        return responses.tagged(request, found)

    return handler


def listing(
    name: str,
    parent: str | None,
    *,
    method: str = "page",
    filters: Filters | None = None,
) -> Handler:
    """GET a page of records, under a parent record or at the top.

    ``method`` names the service's list call; ``filters`` reads extra
    arguments for it from the query string.
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        limit, offset = page_bounds(request)
        scope = () if parent is None else (path_id(request, parent),)
        extra = {} if filters is None else filters(request)
        list_call = getattr(service(request, name), method)
        page = await list_call(
            actor(request), *scope, limit=limit, offset=offset, **extra
        )
        return responses.record(page)

    return handler


async def production(request: web.Request) -> web.StreamResponse:
    """GET /model/{id}/production[?at=]: the PRODUCTION version, with an
    ETag that changes whenever the answer does."""
    found = await service(request, "modelversions").production(
        actor(request), path_id(request, "model"), at=moment(request, "at")
    )
    return responses.tagged(request, found, cache_control=PRODUCTION_CACHE)


def creation(
    name: str, entity: str, body: type[Body], parent: str | None, prefix: str
) -> Handler:
    """POST a new record, under a parent record or at the top."""

    async def handler(request: web.Request) -> web.StreamResponse:
        scope = () if parent is None else (path_id(request, parent),)
        payload = await read_body(request, body)
        create = service(request, name).create

        def answer(new_id: int) -> web.Response:
            return responses.created(request, entity, new_id, f"{prefix}/{new_id}")

        return await once(
            request, payload, lambda: create(actor(request), *scope, payload), answer
        )

    return handler


def modification(name: str, entity: str, body: type[Body]) -> Handler:
    """PATCH /<entity>/{id}: change the fields the body sets."""

    async def handler(request: web.Request) -> web.StreamResponse:
        id_ = path_id(request, entity)
        payload = await read_body(request, body)
        expected = if_match(request, id_)
        update = service(request, name).update

        return await once(
            request,
            payload,
            lambda: update(actor(request), id_, payload, expected=expected),
            lambda _: responses.updated(),
        )

    return handler


def removal(name: str, entity: str) -> Handler:
    """DELETE /<entity>/{id}."""

    async def handler(request: web.Request) -> web.StreamResponse:
        id_ = path_id(request, entity)
        await service(request, name).delete(
            actor(request), id_, expected=if_match(request, id_)
        )
        return responses.deleted()

    return handler
