"""What every area of the client shares: records, pages and write answers.

Getters answer None on 404; lists answer nothing for a parent that does
not exist or cannot be read, like the in-process API; every other failure
raises `ClientError`.

Every create and update carries a fresh ``Idempotency-Key``, so that the
transport may repeat it after a dropped connection or a 503 without the
server acting twice. Updates and deletes take ``if_match``: a record read
earlier, or its ETag; the server then refuses the change with 412
PRECONDITION_FAILED if the record has changed since.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

from pydantic import BaseModel

from app.client._http import NO_RESPONSE, UNEXPECTED_RESPONSE, ClientError, Transport
from app.schemas import Page, Record

M = TypeVar("M", bound=BaseModel)

# What an update or delete may be conditioned on: a record or its ETag.
IfMatch = Record | str | None
Params = Mapping[str, int | str]

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True)
class Pagination:
    """Page bounds: at most ``limit`` records after skipping ``offset``."""

    limit: int = DEFAULT_LIMIT
    offset: int = 0


def path_id(value: int) -> int:
    """``value`` checked to be an integer id, so it can go into a path."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"an id must be an int, not {type(value).__name__}")
    return value


def precondition(if_match: IfMatch) -> dict[str, str]:
    """The If-Match header for a record read earlier or an ETag."""
    if if_match is None:
        return {}
    etag = if_match.etag if isinstance(if_match, Record) else if_match
    return {"If-Match": etag}


def fields(**values: Any) -> dict[str, Any]:
    """The body of a request: the values given, enums as plain integers."""
    return {
        name: value.value if isinstance(value, IntEnum) else value
        for name, value in values.items()
        if value is not None
    }


class Calls:
    """Base of the client's areas: the shapes of the registry's answers."""

    _http: Transport

    async def _record(
        self, kind: type[M], path: str, params: Params | None = None
    ) -> M | None:
        """The record at ``path``, or None on 404."""
        try:
            raw = await self._http.get(path, params=params)
        except ClientError as exc:
            if exc.status == 404:
                return None
            raise
        return kind.model_validate_json(raw)

    async def _page(
        self,
        kind: type[M],
        path: str,
        page: Pagination,
        params: Params | None = None,
    ) -> Page[M]:
        """One page of the list at ``path``; an empty page on 404."""
        bounds = {**(params or {}), "limit": page.limit, "offset": page.offset}
        try:
            raw = await self._http.get(path, params=bounds)
        except ClientError as exc:
            if exc.status == 404:
                return Page[kind](  # type: ignore[valid-type]
                    data=[], total=0, limit=page.limit, offset=page.offset
                )
            raise
        return Page[kind].model_validate_json(raw)  # type: ignore[valid-type]

    async def _listing(
        self,
        kind: type[M],
        path: str,
        page: Pagination | None,
        params: Params | None = None,
    ) -> list[M] | Page[M]:
        """The first page's records, or the page ``page`` names in full."""
        if page is None:
            return (await self._page(kind, path, Pagination(), params)).data
        return await self._page(kind, path, page, params)

    async def _walk(
        self,
        kind: type[M],
        path: str,
        page_size: int,
        params: Params | None = None,
    ) -> AsyncIterator[M]:
        """Every record of the list at ``path``, a page at a time."""
        offset = 0
        while True:
            bounds = Pagination(page_size, offset)
            page = await self._page(kind, path, bounds, params)
            for record in page.data:
                yield record
            offset += len(page.data)
            if not page.data or offset >= page.total:
                return

    async def _create(self, path: str, key: str, body: dict[str, Any]) -> int:
        """POST a new record, safe to repeat; its id."""
        answer = await self._http.send(
            "POST", path, body, idempotency_key=new_idempotency_key()
        )
        return new_id(answer, key, self._http.describe("POST", path))

    async def _update(
        self, path: str, body: dict[str, Any], if_match: IfMatch = None
    ) -> None:
        """PATCH the fields in ``body``, safe to repeat."""
        await self._http.send(
            "PATCH",
            path,
            body,
            idempotency_key=new_idempotency_key(),
            headers=precondition(if_match),
        )

    async def _delete(self, path: str, if_match: IfMatch = None) -> None:
        """DELETE the record at ``path``."""
        await self._http.exchange("DELETE", path, headers=precondition(if_match))


def new_idempotency_key() -> str:
    """A key no other request of this client, or any other, will carry."""
    return str(uuid.uuid4())


def new_id(answer: Any, key: str, request: str) -> int:
    """The id under ``key`` in the answer to a create."""
    value = answer.get(key) if isinstance(answer, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        message = f"no {key} in the answer {answer!r:.200}"
        raise ClientError(NO_RESPONSE, UNEXPECTED_RESPONSE, message, request)
    return value
