"""Middlewares: the error envelope and the acting user."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler
from pymongo.errors import ConnectionFailure, PyMongoError

from app import keys
from app.errors import (
    DatabaseUnavailable,
    InvalidJSON,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RegistryError,
)
from app.web import responses

log = logging.getLogger("deardiary.http")


def _from_http(request: web.Request, exc: web.HTTPException) -> RegistryError:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(
            f"{request.method} is not allowed on {request.path}",
            frozenset(exc.allowed_methods),
        )
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("request body is larger than the configured limit")
    if isinstance(exc, web.HTTPNotFound):
        return NotFound(f"no route for {request.method} {request.path}")
    return InvalidJSON(exc.reason)


@web.middleware
async def error_envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as ``{"code", "message"}`` with its status."""
    try:
        return await handler(request)
    except RegistryError as exc:
        return responses.error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return responses.error(_from_http(request, exc))
    except ConnectionFailure:
        return responses.error(DatabaseUnavailable("the database is unreachable"))
    except (Exception, PyMongoError):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return responses.error(RegistryError("internal error"))


@web.middleware
async def acting_user(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With authentication off every request acts as the seeded admin."""
    # TODO(#3): resolve the bearer token into the actor when auth is on.
    request[keys.ACTOR] = request.app[keys.ADMIN]
    return await handler(request)
