"""Reading requests: JSON bodies, path ids and page bounds, strictly."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import ValidationError

from app.errors import InvalidJSON, InvalidPayload, NotFound
from app.schemas import MAX_ID, Body
from app.services.base import DEFAULT_LIMIT, MAX_LIMIT

B = TypeVar("B", bound=Body)


# Digits in the largest id; longer strings are refused before int() parses
# them, which for thousands of digits is slow and then raises.
MAX_ID_DIGITS = len(str(MAX_ID))


def path_id(request: web.Request, entity: str, key: str = "id") -> int:
    """The integer id in the path; one beyond 64 bits names nothing."""
    raw = request.match_info[key]  # the route pattern admits ASCII digits only
    if len(raw) > MAX_ID_DIGITS or not 1 <= int(raw) <= MAX_ID:
        raise NotFound(f"{entity} {raw[:40]} not found")
    return int(raw)


def page_bounds(request: web.Request) -> tuple[int, int]:
    """``limit`` (default 50, at most 200) and ``offset`` (default 0)."""
    limit = _non_negative(request, "limit", DEFAULT_LIMIT)
    offset = _non_negative(request, "offset", 0)
    return min(limit, MAX_LIMIT), offset


def _non_negative(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    digits = raw.isascii() and raw.isdigit() and len(raw) <= MAX_ID_DIGITS
    if not digits or int(raw) > MAX_ID:
        raise InvalidPayload(f"{name}: must be a non-negative integer")
    return int(raw)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidJSON(f"body has the key {key!r} twice")
        result[key] = value
    return result


def _bounded_int(text: str) -> int:
    # An integer too long for any id still is valid JSON: stand in one just
    # out of range, so validation names the field instead of the parser
    # choking on thousands of digits.
    if len(text.lstrip("-")) > MAX_ID_DIGITS:
        return -(MAX_ID + 1) if text.startswith("-") else MAX_ID + 1
    return int(text)


def parse_object(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw``, or InvalidJSON."""
    try:
        data = json.loads(raw, object_pairs_hook=_unique_keys, parse_int=_bounded_int)
    except (ValueError, RecursionError) as exc:
        raise InvalidJSON("body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise InvalidJSON("body must be a JSON object")
    return data


def validate(model: type[B], data: dict[str, Any]) -> B:
    """``data`` as ``model``, or InvalidPayload naming the field at fault."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidPayload(describe(exc)) from exc


def describe(exc: ValidationError) -> str:
    """One line naming the first field at fault and why."""
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "body"
    if error["type"] == "extra_forbidden":
        return f"{field}: unknown field"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{field}: {message}"


async def read_body(request: web.Request, model: type[B]) -> B:
    """The request's JSON body validated as ``model``."""
    return validate(model, parse_object(await request.read()))
