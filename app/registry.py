"""The in-process Python API of the model registry (SPEC 4).

The reference's names and outcomes over the same services the HTTP API
uses: creates answer ``(id | None, UpsertResult)``, updates an
`UpsertResult`, deletes a bool and getters a record or None. Nothing here
raises for a refused change; the outcome says what happened.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from pydantic import ValidationError

from app.errors import Conflict, InvalidPayload, NotFound, RegistryError
from app.schemas import (
    Model,
    ModelCreate,
    ModelUpdate,
    ModelVersion,
    ModelVersionCreate,
    ModelVersionUpdate,
    Page,
    Stage,
)
from app.services import Actor, Services
from app.services.base import DEFAULT_LIMIT, MAX_LIMIT

log = logging.getLogger("deardiary.registry")

T = TypeVar("T")
R = TypeVar("R")


class UpsertResult(Enum):
    """What a create or update did."""

    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DUPLICATE = "DUPLICATE"
    UNPROCESSABLE = "UNPROCESSABLE"
    ERROR = "ERROR"


@dataclass(frozen=True)
class Pagination:
    """Page bounds: at most ``limit`` records after skipping ``offset``."""

    limit: int = DEFAULT_LIMIT
    offset: int = 0


def _outcome(exc: Exception) -> UpsertResult:
    if isinstance(exc, Conflict):
        return UpsertResult.DUPLICATE
    if isinstance(exc, NotFound | InvalidPayload | ValidationError):
        return UpsertResult.UNPROCESSABLE
    log.warning("registry call failed: %s", exc)
    return UpsertResult.ERROR


class Registry:
    """Models and model versions, acting as one user (the admin by default)."""

    def __init__(self, services: Services, actor: Actor) -> None:
        self._services = services
        self._actor = actor

    # Models --------------------------------------------------------------

    async def get_model(self, id: int) -> Model | None:
        """The model, or None if it does not exist."""
        return await _or_none(self._services.models.get(self._actor, id))

    async def get_models(
        self, project_id: int, page: Pagination | None = None
    ) -> list[Model] | Page[Model]:
        """Every model of the project, or one page of them with the total."""
        return await self._listing(self._services.models.page, project_id, page)

    async def create_model(
        self, project_id: int, name: str, description: str | None = None
    ) -> tuple[int | None, UpsertResult]:
        """Register a model name in a project."""

        async def create() -> int:
            body = ModelCreate(name=name, description=description or "")
            new_id: int = await self._services.models.create(
                self._actor, project_id, body
            )
            return new_id

        return await _created(create)

    async def update_model(
        self, id: int, name: str | None = None, description: str | None = None
    ) -> UpsertResult:
        """Change the fields given; None leaves a field as it is."""

        async def update() -> None:
            body = ModelUpdate(name=name, description=description)
            await self._services.models.update(self._actor, id, body)

        return await _updated(update)

    async def delete_model(self, id: int) -> bool:
        """Delete the model and its versions; resources stay."""
        return await _deleted(self._services.models.delete(self._actor, id))

    # Model versions ------------------------------------------------------

    async def get_modelversion(self, id: int) -> ModelVersion | None:
        """The version, or None if it does not exist."""
        return await _or_none(self._services.modelversions.get(self._actor, id))

    async def get_modelversions(
        self, model_id: int, page: Pagination | None = None
    ) -> list[ModelVersion] | Page[ModelVersion]:
        """Every version of the model by number, or one page with the total."""
        return await self._listing(self._services.modelversions.page, model_id, page)

    async def create_modelversion(
        self,
        model_id: int,
        iteration_id: int,
        resource_id: int | None = None,
        description: str = "",
    ) -> tuple[int | None, UpsertResult]:
        """Register the next version of a model from an iteration."""

        async def create() -> int:
            body = ModelVersionCreate(
                iteration_id=iteration_id,
                resource_id=resource_id,
                description=description,
            )
            new_id: int = await self._services.modelversions.create(
                self._actor, model_id, body
            )
            return new_id

        return await _created(create)

    async def update_modelversion(
        self,
        id: int,
        stage: Stage | int | None = None,
        description: str | None = None,
        resource_id: int | None = None,
    ) -> UpsertResult:
        """Change stage, description or artifact; PRODUCTION archives the
        incumbent."""

        async def update() -> None:
            # Validated from plain data, so an int stage gets the same strict
            # check as over HTTP (True or "3" are refused).
            body = ModelVersionUpdate.model_validate(
                {
                    "stage_id": stage,
                    "description": description,
                    "resource_id": resource_id,
                }
            )
            await self._services.modelversions.update(self._actor, id, body)

        return await _updated(update)

    async def delete_modelversion(self, id: int) -> bool:
        """Delete the version; its number is never reused."""
        return await _deleted(self._services.modelversions.delete(self._actor, id))

    async def _listing(
        self,
        fetch: Callable[..., Awaitable[Page[R]]],
        parent_id: int,
        page: Pagination | None,
    ) -> list[R] | Page[R]:
        try:
            if page is not None:
                return await fetch(
                    self._actor, parent_id, limit=page.limit, offset=page.offset
                )
            return await self._everything(fetch, parent_id)
        except NotFound:
            if page is None:
                return []
            return Page(data=[], total=0, limit=page.limit, offset=page.offset)

    async def _everything(
        self, fetch: Callable[..., Awaitable[Page[R]]], parent_id: int
    ) -> list[R]:
        records: list[R] = []
        while True:
            batch = await fetch(
                self._actor, parent_id, limit=MAX_LIMIT, offset=len(records)
            )
            records.extend(batch.data)
            if len(batch.data) < MAX_LIMIT:
                return records


async def _or_none(lookup: Awaitable[T]) -> T | None:
    try:
        return await lookup
    except NotFound:
        return None


async def _created(
    create: Callable[[], Awaitable[int]],
) -> tuple[int | None, UpsertResult]:
    try:
        return await create(), UpsertResult.CREATED
    except (RegistryError, ValidationError) as exc:
        return None, _outcome(exc)


async def _updated(update: Callable[[], Awaitable[None]]) -> UpsertResult:
    try:
        await update()
    except (RegistryError, ValidationError) as exc:
        return _outcome(exc)
    return UpsertResult.UPDATED


async def _deleted(delete: Awaitable[None]) -> bool:
    try:
        await delete
    except RegistryError:
        return False
    return True
