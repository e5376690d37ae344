"""What every area of the client shares: records, pages and write answers.

Getters answer None on 404; lists answer nothing for a parent that does
not exist or cannot be read, like the in-process API; every other failure
raises `ClientError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

from pydantic import BaseModel

from app.client._http import NO_RESPONSE, UNEXPECTED_RESPONSE, ClientError, Transport
from app.schemas import Page

M = TypeVar("M", bound=BaseModel)

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

    async def _record(self, kind: type[M], path: str) -> M | None:
        """The record at ``path``, or None on 404."""
        try:
            raw = await self._http.get(path)
        except ClientError as exc:
            if exc.status == 404:
                return None
            raise
        return kind.model_validate_json(raw)

    async def _page(self, kind: type[M], path: str, page: Pagination) -> Page[M]:
        """One page of the list at ``path``; an empty page on 404."""
        bounds = {"limit": page.limit, "offset": page.offset}
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
        self, kind: type[M], path: str, page: Pagination | None
    ) -> list[M] | Page[M]:
        """The first page's records, or the page ``page`` names in full."""
        if page is None:
            return (await self._page(kind, path, Pagination())).data
        return await self._page(kind, path, page)

    async def _walk(self, kind: type[M], path: str, page_size: int) -> AsyncIterator[M]:
        """Every record of the list at ``path``, a page at a time."""
        offset = 0
        while True:
            page = await self._page(kind, path, Pagination(page_size, offset))
            for record in page.data:
                yield record
            offset += len(page.data)
            if not page.data or offset >= page.total:
                return

    async def _create(self, path: str, key: str, body: dict[str, Any]) -> int:
        """POST a new record; its id."""
        answer = await self._http.send("POST", path, body)
        return new_id(answer, key, self._http.describe("POST", path))

    async def _update(self, path: str, body: dict[str, Any]) -> None:
        """PATCH the fields in ``body``."""
        await self._http.send("PATCH", path, body)

    async def _delete(self, path: str) -> None:
        """DELETE the record at ``path``."""
        await self._http.exchange("DELETE", path)


def new_id(answer: Any, key: str, request: str) -> int:
    """The id under ``key`` in the answer to a create."""
    value = answer.get(key) if isinstance(answer, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        message = f"no {key} in the answer {answer!r:.200}"
        raise ClientError(NO_RESPONSE, UNEXPECTED_RESPONSE, message, request)
    return value
