"""Models and model versions: the registry's core routes (SPEC 3), the
production lookup and the history of stage changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, overload

from app.client._base import (
    MAX_LIMIT,
    Calls,
    IfMatch,
    Pagination,
    Params,
    fields,
    path_id,
)
from app.client._http import ClientError
from app.schemas import Model, ModelVersion, ModelVersionEvent, Page, Stage


class ModelCalls(Calls):
    """The /model routes."""

    # The last production answer per model with its ETag, so that asking
    # again costs the server a 304 when nothing changed.
    _production: dict[int, tuple[str, ModelVersion]]

    async def get_production(
        self, model_id: int, at: datetime | None = None
    ) -> ModelVersion | None:
        """The model's PRODUCTION version, or None if it has none (or the
        model does not exist or cannot be read).

        With ``at`` (a time; without a time zone read as UTC), the version
        that was in PRODUCTION at that moment, as it is now.
        """
        path = f"/model/{path_id(model_id)}/production"
        if at is not None:
            return await self._record(ModelVersion, path, {"at": _iso(at)})

        cached = self._production.get(model_id)
        headers = {} if cached is None else {"If-None-Match": cached[0]}
        try:
            status, answer, raw = await self._http.get_with_headers(
                path, headers=headers
            )
        except ClientError as exc:
            self._production.pop(model_id, None)
            if exc.status == 404:
                return None
            raise
        if status == 304 and cached is not None:
            return cached[1]
        version = ModelVersion.model_validate_json(raw)
        if "ETag" in answer:
            self._production[model_id] = (answer["ETag"], version)
        return version

    @overload
    async def get_model_history(self, id: int) -> list[ModelVersionEvent]: ...
    @overload
    async def get_model_history(
        self, id: int, page: Pagination
    ) -> Page[ModelVersionEvent]: ...
    async def get_model_history(self, id: int, page: Pagination | None = None) -> Any:
        """The first page of the model's history (registrations, stage
        changes, deletions of its versions), oldest first, or the page named."""
        path = f"/model/{path_id(id)}/history"
        return await self._listing(ModelVersionEvent, path, page)

    def iter_model_history(
        self, id: int, *, page_size: int = MAX_LIMIT
    ) -> AsyncIterator[ModelVersionEvent]:
        """Every event of the model's history, oldest first."""
        path = f"/model/{path_id(id)}/history"
        return self._walk(ModelVersionEvent, path, page_size)

    async def get_model(self, id: int) -> Model | None:
        """The model, or None if it does not exist or cannot be read."""
        return await self._record(Model, f"/model/{path_id(id)}")

    @overload
    async def get_models(self, project_id: int) -> list[Model]: ...
    @overload
    async def get_models(self, project_id: int, page: Pagination) -> Page[Model]: ...
    async def get_models(self, project_id: int, page: Pagination | None = None) -> Any:
        """The first page of the project's models, or the page ``page`` names."""
        path = f"/model/project/{path_id(project_id)}"
        return await self._listing(Model, path, page)

    def iter_models(
        self, project_id: int, *, page_size: int = MAX_LIMIT
    ) -> AsyncIterator[Model]:
        """Every model of the project, by id, fetched a page at a time."""
        path = f"/model/project/{path_id(project_id)}"
        return self._walk(Model, path, page_size)

    async def create_model(
        self, project_id: int, name: str, description: str | None = None
    ) -> int:
        """Register a model name in the project; the new model's id."""
        body = fields(name=name, description=description)
        path = f"/model/project/{path_id(project_id)}"
        return await self._create(path, "model_id", body)

    async def update_model(
        self,
        id: int,
        name: str | None = None,
        description: str | None = None,
        *,
        if_match: IfMatch = None,
    ) -> None:
        """Change the fields given; None leaves a field as it is."""
        body = fields(name=name, description=description)
        await self._update(f"/model/{path_id(id)}", body, if_match)

    async def delete_model(self, id: int, *, if_match: IfMatch = None) -> None:
        """Delete the model and its versions; their resources stay."""
        await self._delete(f"/model/{path_id(id)}", if_match)


class ModelVersionCalls(Calls):
    """The /modelversion routes."""

    async def get_modelversion(self, id: int) -> ModelVersion | None:
        """The version, or None if it does not exist or cannot be read."""
        return await self._record(ModelVersion, f"/modelversion/{path_id(id)}")

    @overload
    async def get_modelversions(
        self, model_id: int, *, stage: Stage | int | None = None
    ) -> list[ModelVersion]: ...
    @overload
    async def get_modelversions(
        self, model_id: int, page: Pagination, *, stage: Stage | int | None = None
    ) -> Page[ModelVersion]: ...
    async def get_modelversions(
        self,
        model_id: int,
        page: Pagination | None = None,
        *,
        stage: Stage | int | None = None,
    ) -> Any:
        """The first page of the model's versions by number (only those in
        ``stage`` if given), or the page ``page`` names."""
        path = f"/modelversion/model/{path_id(model_id)}"
        return await self._listing(ModelVersion, path, page, _in_stage(stage))

    def iter_modelversions(
        self,
        model_id: int,
        *,
        page_size: int = MAX_LIMIT,
        stage: Stage | int | None = None,
    ) -> AsyncIterator[ModelVersion]:
        """Every version of the model (in ``stage`` if given), by number."""
        path = f"/modelversion/model/{path_id(model_id)}"
        return self._walk(ModelVersion, path, page_size, _in_stage(stage))

    @overload
    async def get_modelversion_history(self, id: int) -> list[ModelVersionEvent]: ...
    @overload
    async def get_modelversion_history(
        self, id: int, page: Pagination
    ) -> Page[ModelVersionEvent]: ...
    async def get_modelversion_history(
        self, id: int, page: Pagination | None = None
    ) -> Any:
        """The first page of the version's history, oldest first, or the
        page named."""
        path = f"/modelversion/{path_id(id)}/history"
        return await self._listing(ModelVersionEvent, path, page)

    def iter_modelversion_history(
        self, id: int, *, page_size: int = MAX_LIMIT
    ) -> AsyncIterator[ModelVersionEvent]:
        """Every event of the version's history, oldest first."""
        path = f"/modelversion/{path_id(id)}/history"
        return self._walk(ModelVersionEvent, path, page_size)

    async def create_modelversion(
        self,
        model_id: int,
        iteration_id: int,
        resource_id: int | None = None,
        description: str | None = None,
    ) -> int:
        """Register the model's next version from an iteration; its id.

        The server numbers the version; it starts in NO_STAGE.
        """
        body = fields(
            iteration_id=iteration_id,
            resource_id=resource_id,
            description=description,
        )
        path = f"/modelversion/model/{path_id(model_id)}"
        return await self._create(path, "modelversion_id", body)

    async def update_modelversion(
        self,
        id: int,
        stage: Stage | int | None = None,
        description: str | None = None,
        resource_id: int | None = None,
        *,
        if_match: IfMatch = None,
    ) -> None:
        """Change stage, description or artifact; None leaves a field as it is.

        Promoting to PRODUCTION archives the model's previous production
        version in the same step.
        """
        body = fields(stage_id=stage, description=description, resource_id=resource_id)
        await self._update(f"/modelversion/{path_id(id)}", body, if_match)

    async def delete_modelversion(self, id: int, *, if_match: IfMatch = None) -> None:
        """Delete the version; its number is never reused, its resource stays."""
        await self._delete(f"/modelversion/{path_id(id)}", if_match)


def _in_stage(stage: Stage | int | None) -> Params:
    if stage is None:
        return {}
    if isinstance(stage, bool) or not isinstance(stage, int):
        raise TypeError(
            f"a stage must be a Stage or an int, not {type(stage).__name__}"
        )
    return {"stage_id": int(stage)}


def _iso(moment: datetime) -> str:
    """``moment`` in UTC as ISO 8601 with a Z; a naive time is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")
