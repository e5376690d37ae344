"""Iterations: one training run each, the lineage a model version names."""

from __future__ import annotations

from app.errors import Conflict, InvalidPayload
from app.schemas import (
    Iteration,
    IterationCreate,
    IterationStatus,
    IterationUpdate,
    Page,
    now,
)
from app.services.access import Actor, Permission
from app.services.base import NEXT_REVISION, Expected, Parent, Service, check_revision
from app.store.database import Session


class IterationService(Service):
    collection = "iterations"
    entity = "iteration"

    async def get(self, actor: Actor, iteration_id: int) -> Iteration:
        """The iteration, if the actor may read its project."""
        doc = await self._load(actor, iteration_id, Permission.READ)
        return Iteration.from_doc(doc)  # type: ignore[no-any-return]

    async def page(
        self, actor: Actor, experiment_id: int, *, limit: int, offset: int
    ) -> Page[Iteration]:
        """The experiment's iterations, by id."""
        docs, total = await self._page(
            actor,
            Parent("experiments", "experiment", experiment_id),
            {"experiment_id": experiment_id},
            sort="_id",
            limit=limit,
            offset=offset,
        )
        data = [Iteration.from_doc(doc) for doc in docs]
        return Page(data=data, total=total, limit=limit, offset=offset)

    async def create(
        self, actor: Actor, experiment_id: int, body: IterationCreate
    ) -> int:
        """Start a run in an experiment; a parent run must share it."""
        experiment = await self._load_experiment(
            actor, experiment_id, Permission.CREATE
        )
        parent = body.parent_iteration_id
        if parent is not None and not await self.store.exists(
            self.collection, {"_id": parent, "experiment_id": experiment_id}
        ):
            raise InvalidPayload(
                f"parent_iteration_id: iteration {parent} is not in "
                f"experiment {experiment_id}"
            )

        iteration_id = await self.store.next_id(self.collection)
        doc = {
            "_id": iteration_id,
            "experiment_id": experiment_id,
            "project_id": experiment["project_id"],
            **body.model_dump(),
            "status_id": IterationStatus.RUNNING,
            "error_message": "",
            "created_date": now(),
            "end_date": None,
            "revision": 1,
        }

        async def insert(session: Session) -> int:
            await self.store.insert(self.collection, doc, session=session)
            return iteration_id

        return await self.store.transaction(insert, optional=True)

    async def update(
        self,
        actor: Actor,
        iteration_id: int,
        body: IterationUpdate,
        *,
        expected: Expected = None,
    ) -> None:
        """Record a run's status, notes or error."""

        async def apply(session: Session) -> None:
            doc = await self._load(
                actor, iteration_id, Permission.UPDATE, session=session
            )
            changes = body.changes()
            moment = now()
            if body.status_id is not None and body.status_id != doc["status_id"]:
                running = body.status_id == IterationStatus.RUNNING
                changes["end_date"] = None if running else moment
            await self._set(
                iteration_id,
                changes,
                when=moment,
                expected=expected,
                session=session,
            )

        await self.store.transaction(apply, optional=True)

    async def delete(
        self, actor: Actor, iteration_id: int, *, expected: Expected = None
    ) -> None:
        """Delete a run unless a model version names it; its child runs
        lose their parent."""

        async def remove(session: Session) -> None:
            doc = await self._load(
                actor, iteration_id, Permission.DELETE, session=session
            )
            check_revision(self.entity, doc, expected)
            if await self.store.exists(
                "modelversions", {"iteration_id": iteration_id}, session=session
            ):
                raise Conflict(
                    f"iteration {iteration_id} is the lineage of a model version"
                )

            await self._guard_references(doc["project_id"], session)
            await self.store.update_many(
                self.collection,
                {"parent_iteration_id": iteration_id},
                {
                    "$set": {"parent_iteration_id": None, "updated_date": now()},
                    **NEXT_REVISION,
                },
                session=session,
            )
            await self._remove(iteration_id, expected=expected, session=session)

        await self.store.transaction(remove)
