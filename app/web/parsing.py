"""Reading requests: JSON bodies, path ids, page bounds, filters and the
conditional and idempotency headers, strictly."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import hdrs, web
from pydantic import ValidationError

from app import keys
from app.errors import InvalidJSON, InvalidPayload, NotFound, PayloadTooLarge
from app.schemas import MAX_ID, Body, Stage
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
    """The JSON object in ``raw``, or InvalidJSON.

    The bytes must be UTF-8 (json.loads alone would also take UTF-16 and
    UTF-32), and no ``\\u`` escape may name half a surrogate pair: such a
    string has no UTF-8 form, so MongoDB could not store it.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJSON("body is not UTF-8 text") from exc
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys, parse_int=_bounded_int)
    except (ValueError, RecursionError) as exc:
        raise InvalidJSON("body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise InvalidJSON("body must be a JSON object")
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidJSON("body has a \\u escape of a lone surrogate") from exc
    except RecursionError as exc:
        raise InvalidJSON("body is nested too deeply") from exc
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
    """The request's JSON body validated as ``model``.

    A body that announces more bytes than the limit is refused before a
    byte of it is read; one that does not (chunked) is refused as soon as
    the bytes read pass the limit.
    """
    limit = request.app[keys.SETTINGS].max_body_bytes
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge(
            f"request body of {request.content_length} bytes is larger than "
            f"the limit of {limit}"
        )
    return validate(model, parse_object(await request.read()))


# Conditional requests, filters and headers of the registry's extra routes.

IDEMPOTENCY_KEY = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX = 255


def idempotency_key(request: web.Request) -> str | None:
    """The request's ``Idempotency-Key``: 1 to 255 printable ASCII
    characters, or None without one."""
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is None:
        return None
    printable = all(" " <= ch <= "~" for ch in key)
    if not (printable and 1 <= len(key) <= IDEMPOTENCY_KEY_MAX):
        raise InvalidPayload(
            f"{IDEMPOTENCY_KEY}: must be 1 to {IDEMPOTENCY_KEY_MAX} printable "
            "ASCII characters"
        )
    return key


def if_match(request: web.Request, id_: int) -> frozenset[int] | None:
    """The revisions of record ``id_`` that ``If-Match`` accepts.

    None means any (no header, or ``*``: the write itself answers 404 when
    there is no record). Weak tags never match, nor do tags of another
    record or of no revision at all: such a header accepts nothing.
    """
    if hdrs.IF_MATCH not in request.headers:
        return None
    tags = request.if_match or ()  # an empty or garbled header names nothing
    if any(tag.value == "*" for tag in tags):
        return None
    revisions = (_revision_of(tag.value, id_) for tag in tags if not tag.is_weak)
    return frozenset(revision for revision in revisions if revision is not None)


def _revision_of(tag: str, id_: int) -> int | None:
    """The revision in a tag ``<id>-<revision>`` naming record ``id_``."""
    record, _, revision = tag.partition("-")
    if record != str(id_) or not _is_number(revision):
        return None
    return int(revision)


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= MAX_ID_DIGITS


def stage_filter(request: web.Request) -> dict[str, Stage]:
    """``stage_id`` of a version list, strictly 1 to 4, if given."""
    raw = request.query.get("stage_id")
    if raw is None:
        return {}
    if not _is_number(raw) or int(raw) not in set(Stage):
        allowed = ", ".join(str(stage.value) for stage in Stage)
        raise InvalidPayload(f"stage_id: must be one of {allowed}")
    return {"stage_id": Stage(int(raw))}


# A time zone offset whose "+" a query string turned into a space.
_SPACED_OFFSET = re.compile(r"T.* (\d\d(:?\d\d)?)$")


def moment(request: web.Request, name: str) -> datetime | None:
    """The ISO 8601 time in query parameter ``name``, in UTC; a time
    without an offset is read as UTC."""
    raw = request.query.get(name)
    if raw is None:
        return None
    text = raw.strip()
    if _SPACED_OFFSET.search(text):
        head, _, offset = text.rpartition(" ")
        text = f"{head}+{offset}"
    try:
        parsed = datetime.fromisoformat(text) if len(text) <= 64 else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise InvalidPayload(
            f"{name}: must be an ISO 8601 time, such as 2024-05-01T12:00:00Z"
        )
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # A valid local time whose UTC value leaves the calendar.
        raise InvalidPayload(
            f"{name}: must fall within the years 1 to 9999 in UTC"
        ) from None
