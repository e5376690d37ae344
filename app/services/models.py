"""Registered models: named slots in a project that versions fill."""

from __future__ import annotations

from app.errors import Conflict
from app.schemas import (
    Model,
    ModelCreate,
    ModelUpdate,
    ModelVersionEvent,
    Page,
    now,
)
from app.services.access import Actor, Permission
from app.services.base import Expected, Parent, Service, check_revision
from app.services.history import EVENTS, VERSION_COUNTERS, event_page, version_counter
from app.store.database import Session
from app.store.errors import DuplicateKey
from app.store.ops import Insert

__all__ = ["ModelService", "version_counter"]


class ModelService(Service):
    collection = "models"
    entity = "model"

    async def get(self, actor: Actor, model_id: int) -> Model:
        """The model, if the actor may read its project."""
        doc = await self._load(actor, model_id, Permission.READ)
        return Model.from_doc(doc)  # type: ignore[no-any-return]

    async def page(
        self, actor: Actor, project_id: int, *, limit: int, offset: int
    ) -> Page[Model]:
        """The project's models, by id."""
        docs, total = await self._page(
            actor,
            Parent("projects", "project", project_id),
            {"project_id": project_id},
            sort="_id",
            limit=limit,
            offset=offset,
        )
        data = [Model.from_doc(doc) for doc in docs]
        return Page(data=data, total=total, limit=limit, offset=offset)

    async def history(
        self, actor: Actor, model_id: int, *, limit: int, offset: int
    ) -> Page[ModelVersionEvent]:
        """The model's history, oldest first: every version registered,
        moved from stage to stage or deleted."""
        docs, total = await self._page(
            actor,
            Parent(self.collection, self.entity, model_id),
            {"model_id": model_id},
            collection=EVENTS,
            sort="seq",
            limit=limit,
            offset=offset,
        )
        return event_page(docs, total, limit=limit, offset=offset)

    async def create(self, actor: Actor, project_id: int, body: ModelCreate) -> int:
        """Register a model name in a project; names are unique there."""
        model_id = await self.store.next_id(self.collection)
        doc = {
            "_id": model_id,
            "project_id": project_id,
            **body.model_dump(),
            "created_date": now(),
            "revision": 1,
        }
        # The version counter carries the project so that registration
        # checks lineage in the same step that numbers the version.
        counter = {"_id": version_counter(model_id), "seq": 0, "project_id": project_id}

        async def insert(session: Session) -> int:
            # The project is read in the transaction, before its writes
            # (which go in one step where the server allows).
            await self._require_project(
                actor, project_id, Permission.CREATE, session=session
            )
            await self.store.write(
                [Insert(self.collection, [doc]), Insert(VERSION_COUNTERS, [counter])],
                session=session,
            )
            return model_id

        try:
            return await self.store.transaction(insert)
        except DuplicateKey as exc:
            raise _name_taken(body.name, project_id) from exc

    async def update(
        self,
        actor: Actor,
        model_id: int,
        body: ModelUpdate,
        *,
        expected: Expected = None,
    ) -> None:
        """Rename or describe a model; a rename onto a taken name is 409."""
        doc = await self._load(actor, model_id, Permission.UPDATE)

        async def apply(session: Session) -> None:
            await self._set(
                model_id,
                body.changes(),
                when=now(),
                expected=expected,
                session=session,
            )

        try:
            await self.store.transaction(apply, optional=True)
        except DuplicateKey as exc:
            raise _name_taken(str(body.name), doc["project_id"]) from exc

    async def delete(
        self, actor: Actor, model_id: int, *, expected: Expected = None
    ) -> None:
        """Delete a model, its versions and their history; resources stay."""

        async def remove(session: Session) -> None:
            doc = await self._load(actor, model_id, Permission.DELETE, session=session)
            check_revision(self.entity, doc, expected)
            # The model goes first, by its compare-and-set: without
            # transactions, a stale If-Match must stop the delete before
            # anything under the model is gone.
            await self._remove(model_id, expected=expected, session=session)
            owned = {"model_id": model_id}
            await self.store.delete("modelversions", owned, session=session)
            await self.store.delete(EVENTS, owned, session=session)
            # Dropping the counter also makes a registration racing with
            # this delete conflict, so no version outlives its model.
            await self.store.delete(
                VERSION_COUNTERS, {"_id": version_counter(model_id)}, session=session
            )

        await self.store.transaction(remove)


def _name_taken(name: str, project_id: int) -> Conflict:
    return Conflict(f"a model named {name!r} exists in project {project_id}")
