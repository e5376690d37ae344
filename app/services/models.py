"""Registered models: named slots in a project that versions fill."""

from __future__ import annotations

from app.errors import Conflict
from app.schemas import Model, ModelCreate, ModelUpdate, Page, now
from app.services.access import Actor, Permission
from app.services.base import Service, missing
from app.store.database import DuplicateKey, Session


def version_counter(model_id: int) -> str:
    """The counter that numbers a model's versions."""
    return f"modelversion:{model_id}"


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
            self._require_project(actor, project_id, Permission.READ),
            {"project_id": project_id},
            sort="_id",
            limit=limit,
            offset=offset,
        )
        data = [Model.from_doc(doc) for doc in docs]
        return Page(data=data, total=total, limit=limit, offset=offset)

    async def create(self, actor: Actor, project_id: int, body: ModelCreate) -> int:
        """Register a model name in a project; names are unique there."""
        await self._require_project(actor, project_id, Permission.CREATE)

        model_id = await self.store.next_id(self.collection)
        doc = {
            "_id": model_id,
            "project_id": project_id,
            **body.model_dump(),
            "created_date": now(),
        }

        async def insert(session: Session) -> None:
            await self.store.insert(self.collection, doc, session=session)
            # The version counter carries the project so that registration
            # checks lineage in the same step that numbers the version.
            await self.store.seed_counter(
                version_counter(model_id),
                extra={"project_id": project_id},
                session=session,
            )

        try:
            await self.store.transaction(insert)
        except DuplicateKey as exc:
            raise _name_taken(body.name, project_id) from exc
        return model_id

    async def update(self, actor: Actor, model_id: int, body: ModelUpdate) -> None:
        """Rename or describe a model; a rename onto a taken name is 409."""
        doc = await self._load(actor, model_id, Permission.UPDATE)
        try:
            await self._set(model_id, body.changes(), when=now())
        except DuplicateKey as exc:
            raise _name_taken(str(body.name), doc["project_id"]) from exc

    async def delete(self, actor: Actor, model_id: int) -> None:
        """Delete a model and all its versions; resources stay."""

        async def remove(session: Session) -> None:
            await self._load(actor, model_id, Permission.DELETE, session=session)
            await self.store.delete(
                "modelversions", {"model_id": model_id}, session=session
            )
            # Dropping the counter also makes a registration racing with
            # this delete conflict, so no version outlives its model.
            await self.store.delete(
                "counters", {"_id": version_counter(model_id)}, session=session
            )
            if not await self.store.delete(
                self.collection, {"_id": model_id}, session=session
            ):
                raise missing(self.entity, model_id)

        await self.store.transaction(remove)


def _name_taken(name: str, project_id: int) -> Conflict:
    return Conflict(f"a model named {name!r} exists in project {project_id}")
