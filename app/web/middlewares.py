"""Middlewares: the error envelope and the acting user."""

from __future__ import annotations

import logging

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from pymongo.errors import ConnectionFailure, PyMongoError

from app import keys
from app.auth import bearer_token
from app.errors import (
    DatabaseUnavailable,
    InvalidJSON,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RegistryError,
)
from app.web import responses
from app.web.routes import PUBLIC

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
    """Resolve who the request acts for.

    With authentication off that is the seeded admin. With it on, the
    bearer token names the user, loaded with their permission flags in one
    query; public routes and paths the router does not know need no token.
    """
    if not request.app[keys.SETTINGS].enable_auth:
        request[keys.ACTOR] = request.app[keys.ADMIN]
    elif request.match_info.http_exception is None and not _public(request):
        token = bearer_token(request.headers.get(hdrs.AUTHORIZATION))
        services = request.app[keys.SERVICES]
        request[keys.ACTOR] = await services.auth.actor_for(token)
    return await handler(request)


def _public(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return resource is not None and (request.method, resource.canonical) in PUBLIC
