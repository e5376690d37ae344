"""Writing responses: records and pages as JSON, and the fixed envelopes."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from app.errors import MethodNotAllowed, RegistryError, TooManyRequests

JSON = "application/json"


def record(value: BaseModel, *, status: int = 200) -> web.Response:
    """A record or page as JSON."""
    return web.Response(
        body=value.model_dump_json().encode(), status=status, content_type=JSON
    )


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
    if isinstance(exc, TooManyRequests):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response
