"""Experiments: groups of training runs inside a project."""

from __future__ import annotations

from typing import Any

from app.errors import Conflict
from app.schemas import (
    Experiment,
    ExperimentCreate,
    ExperimentStatus,
    ExperimentUpdate,
    Page,
    now,
)
from app.services.access import Actor, Permission
from app.services.base import Expected, Parent, Service, check_revision
from app.store.database import Session


class ExperimentService(Service):
    collection = "experiments"
    entity = "experiment"

    async def get(self, actor: Actor, experiment_id: int) -> Experiment:
        """The experiment, if the actor may read its project."""
        doc = await self._load(actor, experiment_id, Permission.READ)
        return Experiment.from_doc(doc)  # type: ignore[no-any-return]

    async def page(
        self, actor: Actor, project_id: int, *, limit: int, offset: int
    ) -> Page[Experiment]:
        """The project's experiments, by id."""
        docs, total = await self._page(
            actor,
            Parent("projects", "project", project_id),
            {"project_id": project_id},
            sort="_id",
            limit=limit,
            offset=offset,
        )
        data = [Experiment.from_doc(doc) for doc in docs]
        return Page(data=data, total=total, limit=limit, offset=offset)

    async def create(
        self, actor: Actor, project_id: int, body: ExperimentCreate
    ) -> int:
        """Start an experiment in a project."""
        await self._require_project(actor, project_id, Permission.CREATE)

        experiment_id = await self.store.next_id(self.collection)
        moment = now()
        doc = {
            "_id": experiment_id,
            "project_id": project_id,
            **body.model_dump(),
            "created_date": moment,
            "end_date": _end_date(body.status_id, None, moment),
            "revision": 1,
        }

        async def insert(session: Session) -> int:
            await self.store.insert(self.collection, doc, session=session)
            return experiment_id

        return await self.store.transaction(insert, optional=True)

    async def update(
        self,
        actor: Actor,
        experiment_id: int,
        body: ExperimentUpdate,
        *,
        expected: Expected = None,
    ) -> None:
        """Rename, describe or change the status of an experiment."""

        async def apply(session: Session) -> None:
            doc = await self._load(
                actor, experiment_id, Permission.UPDATE, session=session
            )
            changes = body.changes()
            moment = now()
            if body.status_id is not None and body.status_id != doc["status_id"]:
                end = _end_date(body.status_id, doc["end_date"], moment)
                changes["end_date"] = end
            await self._set(
                experiment_id,
                changes,
                when=moment,
                expected=expected,
                session=session,
            )

        await self.store.transaction(apply, optional=True)

    async def delete(
        self, actor: Actor, experiment_id: int, *, expected: Expected = None
    ) -> None:
        """Delete an experiment with its runs and resources, unless a model
        version still points at one of them."""

        async def remove(session: Session) -> list[int]:
            doc = await self._load(
                actor, experiment_id, Permission.DELETE, session=session
            )
            check_revision(self.entity, doc, expected)
            owned = {"experiment_id": experiment_id}
            iterations = await self._ids("iterations", owned, session)
            resources = await self._ids("resources", owned, session)
            referenced = await self.store.exists(
                "modelversions",
                {
                    "$or": [
                        {"iteration_id": {"$in": iterations}},
                        {"resource_id": {"$in": resources}},
                    ]
                },
                session=session,
            )
            if referenced:
                raise Conflict(
                    f"experiment {experiment_id} has runs or resources "
                    "that model versions still point at"
                )

            await self._guard_references(doc["project_id"], session)
            await self.store.delete("iterations", owned, session=session)
            await self.store.delete("resources", owned, session=session)
            await self._remove(experiment_id, expected=expected, session=session)
            return resources

        file_ids = await self.store.transaction(remove)
        await self.files.delete(file_ids)

    async def _ids(
        self, collection: str, query: dict[str, Any], session: Session
    ) -> list[int]:
        docs = await self.store.find_all(
            collection, query, projection={"_id": 1}, session=session
        )
        return [doc["_id"] for doc in docs]


def _end_date(status: int, current: Any, moment: Any) -> Any:
    """An experiment ends when it stops or finishes, and reopens otherwise."""
    if status == ExperimentStatus.IN_PROGRESS:
        return None
    return current or moment
