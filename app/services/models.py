"""Registered models: named slots in a project that versions fill."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.errors import Conflict, RegistryError
from app.schemas import (
    Model,
    ModelCreate,
    ModelUpdate,
    ModelVersionEvent,
    Page,
    now,
)
from app.services.access import Access, Actor, Permission
from app.services.base import Expected, Parent, Service, check_revision, missing
from app.services.history import EVENTS, VERSION_COUNTERS, event_page, version_counter
from app.store.database import Document, Session, Store, awaits_commit
from app.store.errors import DuplicateKey
from app.store.ops import Insert
from app.store.turns import Batches, one_by_one, sole

__all__ = ["ModelService", "version_counter"]

log = logging.getLogger("deardiary.services.models")


@dataclass(frozen=True)
class _Creation:
    """One model create asked for: by whom, and what."""

    actor: Actor
    body: ModelCreate


class ModelService(Service):
    collection = "models"
    entity = "model"

    def __init__(self, store: Store, access: Access) -> None:
        super().__init__(store, access)
        self._creations = Batches(
            self._create_batch, patience_s=store.deadline_s, regroup=True
        )

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
        """Register a model name in a project; names are unique there.

        Creates in one project that arrive while one runs go together in the
        next transaction (see `app.store.turns.Batches`), on a server with
        transactions; one whose answer is kept for an Idempotency-Key runs
        alone, in the transaction that keeps it.
        """
        creation = _Creation(actor, body)
        if awaits_commit() or not self.store.transactions:
            return await self._create_alone(project_id, creation)
        return await self._creations.submit(project_id, creation)

    async def _create_batch(
        self, project_id: int, batch: list[_Creation]
    ) -> list[int | Exception]:
        """Create ``batch`` in one transaction. A name the database holds
        already rolls the whole batch back, and each create then runs alone
        for its own answer; any other error is every create's."""
        try:
            return await self._create(project_id, batch)
        except DuplicateKey:
            log.debug("creates in project %s run one by one", project_id)
        return await one_by_one(
            batch, lambda creation: self._create_alone(project_id, creation)
        )

    async def _create_alone(self, project_id: int, creation: _Creation) -> int:
        """Create one model in a transaction of its own, which a refusal
        aborts (the request's commit hook runs in it)."""
        (model_id,) = await self.store.next_ids(self.collection, 1)

        async def insert(session: Session) -> int:
            return sole(
                await self._create_in(project_id, [creation], [model_id], session)
            )

        try:
            return await self.store.transaction(insert)
        except DuplicateKey as exc:
            raise _name_taken(creation.body.name, project_id) from exc

    async def _create(
        self, project_id: int, batch: list[_Creation]
    ) -> list[int | Exception]:
        model_ids = await self.store.next_ids(self.collection, len(batch))

        async def insert(session: Session) -> list[int | Exception]:
            return await self._create_in(project_id, batch, model_ids, session)

        return await self.store.transaction(insert)

    async def _create_in(
        self,
        project_id: int,
        batch: list[_Creation],
        model_ids: list[int],
        session: Session,
    ) -> list[int | Exception]:
        """The steps of a create of each of ``batch`` that passes its checks,
        in the caller's transaction: the new models' ids, or why each
        refused one was refused."""
        # The project is read in the transaction, before its writes (which
        # go in one step where the server allows).
        hidden = missing("project", project_id)
        found = await self.store.exists(
            "projects", {"_id": project_id}, session=session
        )
        answers: list[int | Exception] = []
        models: list[Document] = []
        counters: list[Document] = []
        names: set[str] = set()
        for creation, model_id in zip(batch, model_ids, strict=True):
            name = creation.body.name
            try:
                if not found:
                    raise hidden
                await self.access.require(
                    creation.actor, project_id, Permission.CREATE, hidden=hidden
                )
                if name in names:
                    raise _name_taken(name, project_id)
            except RegistryError as exc:
                answers.append(exc)
                continue
            names.add(name)
            models.append(
                {
                    "_id": model_id,
                    "project_id": project_id,
                    **creation.body.model_dump(),
                    "created_date": now(),
                    "revision": 1,
                }
            )
            # The version counter carries the project so that registration
            # checks lineage in the same step that numbers the version.
            counters.append(
                {"_id": version_counter(model_id), "seq": 0, "project_id": project_id}
            )
            answers.append(model_id)
        if models:
            await self.store.write(
                [Insert(self.collection, models), Insert(VERSION_COUNTERS, counters)],
                session=session,
            )
        return answers

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
