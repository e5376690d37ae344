"""Projects, experiments and iterations: the lineage of a model version."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, overload

from app.client._base import MAX_LIMIT, Calls, IfMatch, Pagination, fields, path_id
from app.schemas import (
    Experiment,
    ExperimentStatus,
    Iteration,
    IterationStatus,
    Page,
    Project,
)


class ProjectCalls(Calls):
    """The /project routes."""

    async def get_project(self, id: int) -> Project | None:
        """The project, or None if it does not exist or cannot be read."""
        return await self._record(Project, f"/project/{path_id(id)}")

    @overload
    async def get_projects(self) -> list[Project]: ...
    @overload
    async def get_projects(self, page: Pagination) -> Page[Project]: ...
    async def get_projects(self, page: Pagination | None = None) -> Any:
        """The first page of readable projects, or the page ``page`` names."""
        return await self._listing(Project, "/project", page)

    def iter_projects(self, *, page_size: int = MAX_LIMIT) -> AsyncIterator[Project]:
        """Every readable project, by id, fetched a page at a time."""
        return self._walk(Project, "/project", page_size)

    async def create_project(self, name: str, description: str | None = None) -> int:
        """Create a project (admins only); its id."""
        body = fields(name=name, description=description)
        return await self._create("/project", "project_id", body)

    async def update_project(
        self,
        id: int,
        name: str | None = None,
        description: str | None = None,
        *,
        if_match: IfMatch = None,
    ) -> None:
        """Change the fields given; None leaves a field as it is."""
        body = fields(name=name, description=description)
        await self._update(f"/project/{path_id(id)}", body, if_match)

    async def delete_project(self, id: int, *, if_match: IfMatch = None) -> None:
        """Delete the project and everything under it, artifact bytes too."""
        await self._delete(f"/project/{path_id(id)}", if_match)


class ExperimentCalls(Calls):
    """The /experiment routes."""

    async def get_experiment(self, id: int) -> Experiment | None:
        """The experiment, or None if it does not exist or cannot be read."""
        return await self._record(Experiment, f"/experiment/{path_id(id)}")

    @overload
    async def get_experiments(self, project_id: int) -> list[Experiment]: ...
    @overload
    async def get_experiments(
        self, project_id: int, page: Pagination
    ) -> Page[Experiment]: ...
    async def get_experiments(
        self, project_id: int, page: Pagination | None = None
    ) -> Any:
        """The first page of the project's experiments, or the page named."""
        path = f"/experiment/project/{path_id(project_id)}"
        return await self._listing(Experiment, path, page)

    def iter_experiments(
        self, project_id: int, *, page_size: int = MAX_LIMIT
    ) -> AsyncIterator[Experiment]:
        """Every experiment of the project, by id."""
        path = f"/experiment/project/{path_id(project_id)}"
        return self._walk(Experiment, path, page_size)

    async def create_experiment(
        self,
        project_id: int,
        name: str,
        status: ExperimentStatus | int | None = None,
        description: str | None = None,
    ) -> int:
        """Create an experiment (IN_PROGRESS unless ``status`` says); its id."""
        body = fields(name=name, status_id=status, description=description)
        path = f"/experiment/project/{path_id(project_id)}"
        return await self._create(path, "experiment_id", body)

    async def update_experiment(
        self,
        id: int,
        name: str | None = None,
        status: ExperimentStatus | int | None = None,
        description: str | None = None,
        *,
        if_match: IfMatch = None,
    ) -> None:
        """Change the fields given; None leaves a field as it is."""
        body = fields(name=name, status_id=status, description=description)
        await self._update(f"/experiment/{path_id(id)}", body, if_match)

    async def delete_experiment(self, id: int, *, if_match: IfMatch = None) -> None:
        """Delete the experiment, unless a model version depends on it."""
        await self._delete(f"/experiment/{path_id(id)}", if_match)


class IterationCalls(Calls):
    """The /iteration routes."""

    async def get_iteration(self, id: int) -> Iteration | None:
        """The iteration, or None if it does not exist or cannot be read."""
        return await self._record(Iteration, f"/iteration/{path_id(id)}")

    @overload
    async def get_iterations(self, experiment_id: int) -> list[Iteration]: ...
    @overload
    async def get_iterations(
        self, experiment_id: int, page: Pagination
    ) -> Page[Iteration]: ...
    async def get_iterations(
        self, experiment_id: int, page: Pagination | None = None
    ) -> Any:
        """The first page of the experiment's iterations, or the page named."""
        path = f"/iteration/experiment/{path_id(experiment_id)}"
        return await self._listing(Iteration, path, page)

    def iter_iterations(
        self, experiment_id: int, *, page_size: int = MAX_LIMIT
    ) -> AsyncIterator[Iteration]:
        """Every iteration of the experiment, by id."""
        path = f"/iteration/experiment/{path_id(experiment_id)}"
        return self._walk(Iteration, path, page_size)

    async def create_iteration(
        self,
        experiment_id: int,
        notes: str | None = None,
        parent_iteration_id: int | None = None,
    ) -> int:
        """Start a run (RUNNING) in the experiment; its id."""
        body = fields(notes=notes, parent_iteration_id=parent_iteration_id)
        path = f"/iteration/experiment/{path_id(experiment_id)}"
        return await self._create(path, "iteration_id", body)

    async def update_iteration(
        self,
        id: int,
        status: IterationStatus | int | None = None,
        notes: str | None = None,
        error_message: str | None = None,
        *,
        if_match: IfMatch = None,
    ) -> None:
        """Change the fields given; a final status sets the end date."""
        body = fields(status_id=status, notes=notes, error_message=error_message)
        await self._update(f"/iteration/{path_id(id)}", body, if_match)

    async def delete_iteration(self, id: int, *, if_match: IfMatch = None) -> None:
        """Delete the iteration, unless a model version names it."""
        await self._delete(f"/iteration/{path_id(id)}", if_match)
