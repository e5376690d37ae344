"""Model versions: registration, promotion and the lineage rules (SPEC 2).

- A version's number comes from its model's counter, bumped in the same
  transaction as the insert: a failed registration consumes no number and
  numbers are never reused.
- Promotion to PRODUCTION archives the incumbent in the same transaction; a
  partial unique index makes the database refuse a second PRODUCTION
  version, and a promotion that loses a race retries.
- Lineage stays in the project: a foreign or missing iteration or resource
  gets the same 422.
- Registration, every stage change (the automatic archiving included) and
  deletion are written to the model's history in the same transaction
  (see `app.services.history`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime
from typing import Any

from app.errors import DatabaseUnavailable, InvalidPayload, NotFound
from app.metrics import count_promotion, count_registration, count_retry
from app.schemas import (
    EventKind,
    ModelVersion,
    ModelVersionCreate,
    ModelVersionEvent,
    ModelVersionUpdate,
    Page,
    Stage,
    now,
)
from app.services.access import Access, Actor, Permission
from app.services.base import (
    NEXT_REVISION,
    Expected,
    Parent,
    Service,
    check_revision,
    missing,
)
from app.services.history import (
    EVENTS,
    Change,
    History,
    event_page,
    version_counter,
)
from app.store.database import Document, Session, Store
from app.store.errors import DuplicateKey

log = logging.getLogger("deardiary.services.modelversions")


def _archived(version: Document) -> Change:
    return Change(
        version,
        EventKind.STAGE_CHANGED,
        Stage.PRODUCTION,
        Stage.ARCHIVED,
        requested=False,
    )


def _foreign(field: str, entity: str, id_: int) -> InvalidPayload:
    # One message for "absent" and "in another project": nobody learns what
    # exists in a project they cannot read.
    return InvalidPayload(
        f"{field}: {entity} {id_} does not exist in the model's project"
    )


class ModelVersionService(Service):
    collection = "modelversions"
    entity = "modelversion"

    def __init__(self, store: Store, access: Access) -> None:
        super().__init__(store, access)
        self.events = History(store)

    async def get(self, actor: Actor, version_id: int) -> ModelVersion:
        """The version, if the actor may read its project."""
        doc = await self._load(actor, version_id, Permission.READ)
        return ModelVersion.from_doc(doc)  # type: ignore[no-any-return]

    async def page(
        self,
        actor: Actor,
        model_id: int,
        *,
        limit: int,
        offset: int,
        stage_id: Stage | None = None,
    ) -> Page[ModelVersion]:
        """The model's versions (in ``stage_id`` if given), by number."""
        query: Document = {"model_id": model_id}
        if stage_id is not None:
            query["stage_id"] = stage_id
        docs, total = await self._page(
            actor,
            Parent("models", "model", model_id),
            query,
            sort="version",
            limit=limit,
            offset=offset,
        )
        data = [ModelVersion.from_doc(doc) for doc in docs]
        return Page(data=data, total=total, limit=limit, offset=offset)

    async def production(
        self, actor: Actor, model_id: int, *, at: datetime | None = None
    ) -> ModelVersion:
        """The model's PRODUCTION version, now or at the moment ``at``.

        The answer for now is one lookup on the index that allows a single
        PRODUCTION version per model; the model itself is read only to say
        why nothing was found.
        """
        if at is not None:
            return await self._production_at(actor, model_id, at)

        doc = await self.store.find_one(
            self.collection, {"model_id": model_id, "stage_id": Stage.PRODUCTION}
        )
        if doc is None:
            await self._load_from("models", "model", actor, model_id, Permission.READ)
            raise NotFound(f"model {model_id} has no version in production")
        hidden = missing("model", model_id)
        await self.access.require(
            actor, doc["project_id"], Permission.READ, hidden=hidden
        )
        return ModelVersion.from_doc(doc)  # type: ignore[no-any-return]

    async def history(
        self, actor: Actor, version_id: int, *, limit: int, offset: int
    ) -> Page[ModelVersionEvent]:
        """The version's events, oldest first."""
        docs, total = await self._page(
            actor,
            Parent(self.collection, self.entity, version_id),
            {"modelversion_id": version_id},
            collection=EVENTS,
            sort="seq",
            limit=limit,
            offset=offset,
        )
        return event_page(docs, total, limit=limit, offset=offset)

    async def create(
        self, actor: Actor, model_id: int, body: ModelVersionCreate
    ) -> int:
        """Register the next version of a model from an iteration."""
        if not actor.is_admin:
            await self._load_from("models", "model", actor, model_id, Permission.CREATE)
        version_id, event_id = await asyncio.gather(
            self.store.next_id(self.collection), self.store.next_id(EVENTS)
        )

        async def register(session: Session) -> int:
            project_id = await self._lineage_project(model_id, body, session)
            slots = await self.events.reserve(
                model_id,
                1,
                also={"seq": 1},
                where={"project_id": project_id},
                session=session,
            )
            if slots is None:
                await self._require_model(model_id, session)
                raise _foreign("iteration_id", "iteration", body.iteration_id)

            doc = {
                "_id": version_id,
                "model_id": model_id,
                "project_id": project_id,
                "version": slots.counter["seq"],
                **body.model_dump(),
                "stage_id": Stage.NO_STAGE,
                "created_date": slots.at,
                "revision": 1,
            }
            await self.store.insert(self.collection, doc, session=session)
            registered = Change(doc, EventKind.REGISTERED, None, Stage.NO_STAGE)
            await self.events.record(
                [registered], [event_id], slots, actor.user_id, session
            )
            return version_id

        registered = await self.store.transaction(register)
        count_registration()
        return registered

    async def update(
        self,
        actor: Actor,
        version_id: int,
        body: ModelVersionUpdate,
        *,
        expected: Expected = None,
    ) -> None:
        """Change a version's stage, description or artifact.

        Promotion may lose a race to another promotion of the same model;
        it then runs again from the start, against the winner's result.
        """
        # A stage change writes its event and perhaps one for the archived
        # incumbent; the ids are drawn here, outside the transaction.
        event_ids: list[int] = []
        if body.stage_id is not None:
            event_ids = await self.store.next_ids(EVENTS, 2)
        for attempt in range(self.store.retries):
            try:
                await self.store.transaction(
                    lambda session: self._apply(
                        actor, version_id, body, expected, event_ids, session
                    )
                )
                if body.stage_id is not None:
                    count_promotion(Stage(body.stage_id).name)
                return
            except DuplicateKey:
                log.debug("promotion of %s lost a race (try %d)", version_id, attempt)
                count_retry("conflict")
                await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise DatabaseUnavailable(
            f"model version {version_id} could not be promoted: too much "
            "contention, retry"
        )

    async def delete(
        self, actor: Actor, version_id: int, *, expected: Expected = None
    ) -> None:
        """Delete a version; its number is never given out again."""
        event_id = await self.store.next_id(EVENTS)

        async def remove(session: Session) -> None:
            doc = await self._load(
                actor, version_id, Permission.DELETE, session=session
            )
            check_revision(self.entity, doc, expected)
            slots = await self.events.reserve(doc["model_id"], 1, session=session)
            if slots is None:
                raise missing(self.entity, version_id)  # the model went first
            await self._remove(version_id, expected=expected, session=session)
            deleted = Change(doc, EventKind.DELETED, doc["stage_id"], None)
            await self.events.record(
                [deleted], [event_id], slots, actor.user_id, session
            )

        await self.store.transaction(remove)

    async def _apply(
        self,
        actor: Actor,
        version_id: int,
        body: ModelVersionUpdate,
        expected: Expected,
        event_ids: list[int],
        session: Session,
    ) -> None:
        doc = await self._load(actor, version_id, Permission.UPDATE, session=session)
        check_revision(self.entity, doc, expected)
        changes = {
            key: value for key, value in body.changes().items() if doc.get(key) != value
        }

        if "resource_id" in changes:
            await self._require_resource(doc, changes["resource_id"], session)
        if "stage_id" not in changes:
            await self._set(
                version_id, changes, when=now(), expected=expected, session=session
            )
            return
        await self._change_stage(actor, doc, changes, expected, event_ids, session)

    async def _change_stage(
        self,
        actor: Actor,
        doc: Document,
        changes: dict[str, Any],
        expected: Expected,
        event_ids: list[int],
        session: Session,
    ) -> None:
        """Move the version to another stage, archiving the incumbent when
        it goes to PRODUCTION, and record both in the history."""
        stage = changes["stage_id"]
        incumbents = []
        if stage == Stage.PRODUCTION:
            incumbents = await self._in_production(doc, session)
        moved = Change(doc, EventKind.STAGE_CHANGED, doc["stage_id"], stage)
        events = [*(_archived(other) for other in incumbents), moved]
        slots = await self.events.reserve(doc["model_id"], len(events), session=session)
        if slots is None:
            raise missing(self.entity, doc["_id"])  # its model is being deleted

        if incumbents:
            await self._archive(incumbents, slots.at, session)
        await self._set(
            doc["_id"], changes, when=slots.at, expected=expected, session=session
        )
        if len(event_ids) < len(events):
            event_ids = event_ids + await self.store.next_ids(
                EVENTS, len(events) - len(event_ids)
            )
        await self.events.record(events, event_ids, slots, actor.user_id, session)

    async def _in_production(self, doc: Document, session: Session) -> list[Document]:
        """The model's other PRODUCTION versions: one at most, by the index."""
        return await self.store.find_all(
            self.collection,
            {
                "model_id": doc["model_id"],
                "stage_id": Stage.PRODUCTION,
                "_id": {"$ne": doc["_id"]},
            },
            projection={"model_id": 1, "project_id": 1, "version": 1},
            session=session,
        )

    async def _archive(
        self, versions: list[Document], moment: datetime, session: Session
    ) -> None:
        await self.store.update_many(
            self.collection,
            {
                "_id": {"$in": [version["_id"] for version in versions]},
                "stage_id": Stage.PRODUCTION,
            },
            {
                "$set": {"stage_id": Stage.ARCHIVED, "updated_date": moment},
                **NEXT_REVISION,
            },
            session=session,
        )

    async def _production_at(
        self, actor: Actor, model_id: int, moment: datetime
    ) -> ModelVersion:
        _, version_id = await asyncio.gather(
            self._load_from("models", "model", actor, model_id, Permission.READ),
            self.events.production_at(model_id, moment),
        )
        when = moment.isoformat()
        if version_id is None:
            raise NotFound(f"model {model_id} had no version in production at {when}")
        doc = await self.store.get(self.collection, version_id)
        if doc is None:
            raise NotFound(
                f"model version {version_id}, in production at {when}, "
                "has been deleted since"
            )
        return ModelVersion.from_doc(doc)  # type: ignore[no-any-return]

    async def _lineage_project(
        self, model_id: int, body: ModelVersionCreate, session: Session
    ) -> int:
        """The project of the iteration (and resource) a version names.

        The model's own project is read only when the lineage is refused,
        to blame the right field: an iteration of another project must be
        refused as such even when the resource is the model's, or the
        answer would tell that the iteration exists. A missing model is
        404 before any of that.
        """
        iteration = await self.store.find_one(
            "iterations",
            {"_id": body.iteration_id},
            projection={"project_id": 1},
            session=session,
        )
        if iteration is None:
            await self._require_model(model_id, session)
            raise _foreign("iteration_id", "iteration", body.iteration_id)
        project_id = int(iteration["project_id"])

        if body.resource_id is not None and not await self.store.exists(
            "resources",
            {"_id": body.resource_id, "project_id": project_id},
            session=session,
        ):
            if await self._model_project(model_id, session) != project_id:
                raise _foreign("iteration_id", "iteration", body.iteration_id)
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

    async def _model_project(self, model_id: int, session: Session) -> int:
        """The model's project, from its version counter; 404 if missing."""
        counter = await self.store.find_one(
            "counters",
            {"_id": version_counter(model_id)},
            projection={"project_id": 1},
            session=session,
        )
        if counter is None:
            raise missing("model", model_id)
        return int(counter["project_id"])
