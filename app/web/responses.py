"""Writing responses: records and pages as JSON, and the fixed envelopes."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from app.errors import (
    IdempotencyKeyInFlight,
    MethodNotAllowed,
    PreconditionFailed,
    RegistryError,
    TooManyRequests,
)
from app.schemas import Record

JSON = "application/json"
# Every answer carries its request's id, and a handed-over request its own.
REQUEST_ID_HEADER = "X-Request-ID"


def record(
    value: BaseModel, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A record or page as JSON."""
    return web.Response(
        body=value.model_dump_json().encode(),
        status=status,
        headers=headers,
        content_type=JSON,
    )


def tagged(
    request: web.Request, value: Record, *, cache_control: str | None = None
) -> web.Response:
    """A record with its ETag; 304 without a body when the client's
    If-None-Match already names it."""
    etag = value.etag
    headers = {"ETag": etag}
    if cache_control is not None:
        headers["Cache-Control"] = cache_control
    if _already_held(request, etag):
        return web.Response(status=304, headers=headers)
    return record(value, headers=headers)


def _already_held(request: web.Request, etag: str) -> bool:
    # If-None-Match compares weakly: W/"1-2" names the same as "1-2".
    tags = request.if_none_match
    if not tags:
        return False
    return any(tag.value in (etag.strip('"'), "*") for tag in tags)


def message(payload: dict[str, Any], *, status: int = 200) -> web.Response:
    """A small fixed JSON object."""
    return web.json_response(payload, status=status)


def created(request: web.Request, entity: str, id_: int, location: str) -> web.Response:
    """201 with ``{"<entity>_id": id}`` and a Location header."""
    response = message({f"{entity}_id": id_}, status=201)
    response.headers["Location"] = location
    return response


def updated() -> web.Response:
    return message({"message": "UPDATED"})


def deleted() -> web.Response:
    return message({"message": "OK"})


def error(exc: RegistryError) -> web.Response:
    """The error envelope, with the headers some errors call for."""
    response = message(exc.envelope(), status=exc.status)
    if isinstance(exc, MethodNotAllowed):
        response.headers["Allow"] = ", ".join(sorted(exc.allowed))
    if isinstance(exc, TooManyRequests | IdempotencyKeyInFlight):
        response.headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, PreconditionFailed):
        response.headers["ETag"] = exc.etag
    return response
