"""Model versions: registration, promotion and the lineage rules (SPEC 2).

- A version's number comes from its model's counter, bumped in the same
  transaction as the insert: a failed registration consumes no number and
  numbers are never reused.
- Promotion to PRODUCTION archives the incumbent in the same transaction; a
  partial unique index makes the database refuse a second PRODUCTION
  version, and a promotion that loses a race retries.
- Lineage stays in the project: a foreign or missing iteration or resource
  gets the same 422.
"""

from __future__ import annotations

import asyncio
import logging
import random

from app.errors import DatabaseUnavailable, InvalidPayload
from app.schemas import (
    ModelVersion,
    ModelVersionCreate,
    ModelVersionUpdate,
    Page,
    Stage,
    now,
)
from app.services.access import Actor, Permission
from app.services.base import Service, missing
from app.services.models import version_counter
from app.store.database import Document, DuplicateKey, Session

log = logging.getLogger("deardiary.services.modelversions")


def _foreign(field: str, entity: str, id_: int) -> InvalidPayload:
    # One message for "absent" and "in another project": nobody learns what
    # exists in a project they cannot read.
    return InvalidPayload(
        f"{field}: {entity} {id_} does not exist in the model's project"
    )


class ModelVersionService(Service):
    collection = "modelversions"
    entity = "modelversion"

    async def get(self, actor: Actor, version_id: int) -> ModelVersion:
        """The version, if the actor may read its project."""
        doc = await self._load(actor, version_id, Permission.READ)
        return ModelVersion.from_doc(doc)  # type: ignore[no-any-return]

    async def page(
        self, actor: Actor, model_id: int, *, limit: int, offset: int
    ) -> Page[ModelVersion]:
        """The model's versions, by version number."""
        docs, total = await self._page(
            self._load_from("models", "model", actor, model_id, Permission.READ),
            {"model_id": model_id},
            sort="version",
            limit=limit,
            offset=offset,
        )
        data = [ModelVersion.from_doc(doc) for doc in docs]
        return Page(data=data, total=total, limit=limit, offset=offset)

    async def create(
        self, actor: Actor, model_id: int, body: ModelVersionCreate
    ) -> int:
        """Register the next version of a model from an iteration."""
        if not actor.is_admin:
            await self._load_from("models", "model", actor, model_id, Permission.CREATE)
        version_id = await self.store.next_id(self.collection)

        async def register(session: Session) -> None:
            try:
                project_id = await self._lineage_project(body, session)
            except InvalidPayload:
                await self._require_model(model_id, session)
                raise
            counter = await self.store.increment(
                version_counter(model_id),
                where={"project_id": project_id},
                session=session,
            )
            if counter is None:
                await self._require_model(model_id, session)
                raise _foreign("iteration_id", "iteration", body.iteration_id)

            doc = {
                "_id": version_id,
                "model_id": model_id,
                "project_id": project_id,
                "version": counter["seq"],
                **body.model_dump(),
                "stage_id": Stage.NO_STAGE,
                "created_date": now(),
            }
            await self.store.insert(self.collection, doc, session=session)

        await self.store.transaction(register)
        return version_id

    async def update(
        self, actor: Actor, version_id: int, body: ModelVersionUpdate
    ) -> None:
        """Change a version's stage, description or artifact.

        Promotion may lose a race to another promotion of the same model;
        it then runs again from the start, against the winner's result.
        """
        for attempt in range(self.store.retries):
            try:
                await self.store.transaction(
                    lambda session: self._apply(actor, version_id, body, session)
                )
                return
            except DuplicateKey:
                log.debug("promotion of %s lost a race (try %d)", version_id, attempt)
                await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise DatabaseUnavailable(
            f"model version {version_id} could not be promoted: too much "
            "contention, retry"
        )

    async def delete(self, actor: Actor, version_id: int) -> None:
        """Delete a version; its number is never given out again."""
        await self._load(actor, version_id, Permission.DELETE)
        if not await self.store.delete(self.collection, {"_id": version_id}):
            raise missing(self.entity, version_id)

    async def _apply(
        self,
        actor: Actor,
        version_id: int,
        body: ModelVersionUpdate,
        session: Session,
    ) -> None:
        doc = await self._load(actor, version_id, Permission.UPDATE, session=session)
        moment = now()
        changes = {
            key: value for key, value in body.changes().items() if doc.get(key) != value
        }

        if "resource_id" in changes:
            await self._require_resource(doc, changes["resource_id"], session)
        if changes.get("stage_id") == Stage.PRODUCTION:
            await self._archive_production(doc["model_id"], version_id, moment, session)
        await self._set(version_id, changes, when=moment, session=session)

    async def _archive_production(
        self, model_id: int, keep: int, moment: object, session: Session
    ) -> None:
        await self.store.update_many(
            self.collection,
            {"model_id": model_id, "stage_id": Stage.PRODUCTION, "_id": {"$ne": keep}},
            {"$set": {"stage_id": Stage.ARCHIVED, "updated_date": moment}},
            session=session,
        )

    async def _lineage_project(self, body: ModelVersionCreate, session: Session) -> int:
        """The project of the iteration (and resource) a version names."""
        iteration = await self.store.find_one(
            "iterations",
            {"_id": body.iteration_id},
            projection={"project_id": 1},
            session=session,
        )
        if iteration is None:
            raise _foreign("iteration_id", "iteration", body.iteration_id)
        project_id = int(iteration["project_id"])

        if body.resource_id is not None and not await self.store.exists(
            "resources",
            {"_id": body.resource_id, "project_id": project_id},
            session=session,
        ):
            raise _foreign("resource_id", "resource", body.resource_id)
        return project_id

    async def _require_resource(
        self, doc: Document, resource_id: int, session: Session
    ) -> None:
        """Check a new artifact's project and guard it against deletion."""
        if not await self.store.exists(
            "resources",
            {"_id": resource_id, "project_id": doc["project_id"]},
            session=session,
        ):
            raise _foreign("resource_id", "resource", resource_id)
        # Writing the model's counter makes a racing delete of the resource
        # conflict with this transaction (see Service._guard_references).
        await self.store.increment(
            version_counter(doc["model_id"]), field="guard", session=session
        )

    async def _require_model(self, model_id: int, session: Session) -> None:
        if not await self.store.exists(
            "counters", {"_id": version_counter(model_id)}, session=session
        ):
            raise missing("model", model_id)
