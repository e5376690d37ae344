"""Models and model versions: the registry's core routes (SPEC 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, overload

from app.client._base import MAX_LIMIT, Calls, Pagination, fields, path_id
from app.schemas import Model, ModelVersion, Page, Stage


class ModelCalls(Calls):
    """The /model routes."""

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
        self, id: int, name: str | None = None, description: str | None = None
    ) -> None:
        """Change the fields given; None leaves a field as it is."""
        body = fields(name=name, description=description)
        await self._update(f"/model/{path_id(id)}", body)

    async def delete_model(self, id: int) -> None:
        """Delete the model and its versions; their resources stay."""
        await self._delete(f"/model/{path_id(id)}")


class ModelVersionCalls(Calls):
    """The /modelversion routes."""

    async def get_modelversion(self, id: int) -> ModelVersion | None:
        """The version, or None if it does not exist or cannot be read."""
        return await self._record(ModelVersion, f"/modelversion/{path_id(id)}")

    @overload
    async def get_modelversions(self, model_id: int) -> list[ModelVersion]: ...
    @overload
    async def get_modelversions(
        self, model_id: int, page: Pagination
    ) -> Page[ModelVersion]: ...
    async def get_modelversions(
        self, model_id: int, page: Pagination | None = None
    ) -> Any:
        """The first page of the model's versions by number, or the page
        ``page`` names."""
        path = f"/modelversion/model/{path_id(model_id)}"
        return await self._listing(ModelVersion, path, page)

    def iter_modelversions(
        self, model_id: int, *, page_size: int = MAX_LIMIT
    ) -> AsyncIterator[ModelVersion]:
        """Every version of the model, by version number."""
        path = f"/modelversion/model/{path_id(model_id)}"
        return self._walk(ModelVersion, path, page_size)

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
    ) -> None:
        """Change stage, description or artifact; None leaves a field as it is.

        Promoting to PRODUCTION archives the model's previous production
        version in the same step.
        """
        body = fields(stage_id=stage, description=description, resource_id=resource_id)
        await self._update(f"/modelversion/{path_id(id)}", body)

    async def delete_modelversion(self, id: int) -> None:
        """Delete the version; its number is never reused, its resource stays."""
        await self._delete(f"/modelversion/{path_id(id)}")
