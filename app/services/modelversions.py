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
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.errors import DatabaseUnavailable, InvalidPayload, NotFound, RegistryError
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
    revision_of,
    revision_query,
)
from app.services.history import (
    EVENTS,
    VERSION_COUNTERS,
    Change,
    History,
    counter_of,
    event_page,
    version_counter,
)
from app.store.database import Document, Session, Store, awaits_commit
from app.store.errors import DuplicateKey
from app.store.ops import Delete, Insert, Ref, Related, Update, Write
from app.store.turns import Batches, one_by_one, sole

log = logging.getLogger("deardiary.services.modelversions")

# How many versions' models a process remembers to queue their stage changes.
_KNOWN_MODELS = 100_000


def _archived(version: Document) -> Change:
    return Change(
        version,
        EventKind.STAGE_CHANGED,
        Stage.PRODUCTION,
        Stage.ARCHIVED,
        requested=False,
    )


@dataclass(frozen=True)
class _Found:
    """A version as read for a change, with what its history needs."""

    doc: Document
    counter: Document | None = None
    incumbents: list[Document] = field(default_factory=list)


@dataclass(frozen=True)
class _Registration:
    """One registration asked for: by whom, and what."""

    actor: Actor
    body: ModelVersionCreate

    def lineage(self) -> list[tuple[str, int]]:
        """The records it names, as (collection, id)."""
        named = [("iterations", self.body.iteration_id)]
        if self.body.resource_id is not None:
            named.append(("resources", self.body.resource_id))
        return named


@dataclass(frozen=True)
class _StageChange:
    """One stage change asked for: by whom, of which version, to which
    stage, and the revisions If-Match allows."""

    actor: Actor
    version_id: int
    stage: Stage
    expected: Expected


def _named(collection: str, id_: int) -> str:
    """The name a registration's read gives a record of its lineage."""
    return f"{collection}:{id_}"


def _in_project(doc: Document | None, project_id: int) -> bool:
    return doc is not None and doc.get("project_id") == project_id


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
        # The model of each version this process has read: a version never
        # moves, so a change can take its model's turn (see
        # `app.store.turns`) before its transaction reads the version. A
        # stage change reads the model of one not known yet; another change
        # of it takes no turn.
        self._model_of: OrderedDict[int, int] = OrderedDict()
        patience = store.deadline_s
        self._registrations = Batches(self._register, patience_s=patience)
        # Stage changes regroup (see `Batches`). Registrations do not:
        # measured with many clients on one model, it made them slower.
        self._stage_changes = Batches(
            self._change_stages_batch, patience_s=patience, regroup=True
        )

    async def model_of(self, version_id: int) -> int | None:
        """The model of a version, read once per process (a version never
        moves); None for a version that does not exist. No permission is
        checked: the answer only picks who handles a request."""
        model_id = self._model_of.get(version_id)
        if model_id is None:
            doc = await self.store.find_one(
                self.collection, {"_id": version_id}, projection={"model_id": 1}
            )
            if doc is None:
                return None
            model_id = int(doc["model_id"])
            self.remember(version_id, model_id)
        return model_id

    def _turn(self, version_id: int) -> str | None:
        model_id = self._model_of.get(version_id)
        return None if model_id is None else version_counter(model_id)

    def remember(self, version_id: int, model_id: int) -> None:
        """Note the model of a version, learnt along the way."""
        self._model_of[version_id] = model_id
        self._model_of.move_to_end(version_id)
        if len(self._model_of) > _KNOWN_MODELS:
            self._model_of.popitem(last=False)

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
        """Register the next version of a model from an iteration.

        The model's version counter, the iteration and the resource are
        read in one step and the version, its event and the counter's bump
        written in another (see `app.store.ops`); the permission check
        needs no step of its own, the counter carrying the model's project.
        Registrations of one model that arrive while one runs go together
        in the next transaction (see `app.store.turns`), each checked on
        its own; one whose answer is kept for an Idempotency-Key runs alone,
        in the transaction that keeps it.
        """
        registration = _Registration(actor, body)
        if awaits_commit():
            registered = await self._register_alone(model_id, registration)
        else:
            registered = await self._registrations.submit(model_id, registration)
        count_registration()
        return registered

    async def _register(
        self, model_id: int, batch: list[_Registration]
    ) -> list[int | Exception]:
        """Register each of ``batch`` that passes its checks, numbered in
        order, in one transaction: the new versions' ids, or why each
        refused one was refused. An error of the whole transaction is every
        registration's (see `app.store.turns.Batches`)."""
        version_ids, event_ids = await self._registration_ids(len(batch))

        async def register(session: Session) -> list[int | Exception]:
            return await self._register_in(
                model_id, batch, version_ids, event_ids, session
            )

        answers = await self.store.transaction(register, turn=version_counter(model_id))
        for answer in answers:
            if isinstance(answer, int):
                self.remember(answer, model_id)
        return answers

    async def _register_alone(self, model_id: int, registration: _Registration) -> int:
        """Register one version in a transaction of its own, which a refusal
        aborts (the request's commit hook runs in it)."""
        version_ids, event_ids = await self._registration_ids(1)

        async def register(session: Session) -> int:
            return sole(
                await self._register_in(
                    model_id, [registration], version_ids, event_ids, session
                )
            )

        registered = await self.store.transaction(
            register, turn=version_counter(model_id)
        )
        self.remember(registered, model_id)
        return registered

    async def _registration_ids(self, count: int) -> tuple[list[int], list[int]]:
        """Ids for ``count`` versions and their events, drawn outside the
        transaction."""
        versions, events = await asyncio.gather(
            self.store.next_ids(self.collection, count),
            self.store.next_ids(EVENTS, count),
        )
        return versions, events

    async def _register_in(
        self,
        model_id: int,
        batch: list[_Registration],
        version_ids: list[int],
        event_ids: list[int],
        session: Session,
    ) -> list[int | Exception]:
        """The steps of `_register`, in the caller's transaction."""
        counter, found = await self._registration_reads(model_id, batch, session)
        answers: list[int | Exception] = []
        docs: list[Document] = []
        requests: list[tuple[list[Change], int]] = []
        first = int(counter.get("seq", 0)) + 1 if counter else 0
        for registration, version_id in zip(batch, version_ids, strict=True):
            try:
                project_id = await self._check_registration(
                    model_id, registration, counter, found
                )
            except RegistryError as exc:
                answers.append(exc)
                continue
            doc = {
                "_id": version_id,
                "model_id": model_id,
                "project_id": project_id,
                "version": first + len(docs),
                **registration.body.model_dump(),
                "stage_id": Stage.NO_STAGE,
                "revision": 1,
            }
            docs.append(doc)
            registered = Change(doc, EventKind.REGISTERED, None, Stage.NO_STAGE)
            requests.append(([registered], registration.actor.user_id))
            answers.append(version_id)
        if not docs:
            return answers
        assert counter is not None
        slots = self.events.reserve(counter, len(docs), also={"seq": len(docs)})
        for doc in docs:
            doc["created_date"] = slots.at
        await self.events.record_requests(
            requests, event_ids, slots, session, writes=(Insert(self.collection, docs),)
        )
        return answers

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
        stage = body.stage_id
        if (
            stage is not None
            and set(body.changes()) == {"stage_id"}
            and not awaits_commit()
            # Without transactions a batch's writes could stop half done.
            and self.store.transactions
        ):
            # Stage changes of one model that arrive together share a
            # transaction (see `_change_stages`); the version's model is
            # read first, once per process.
            model_id = await self.model_of(version_id)
            if model_id is not None:
                change = _StageChange(actor, version_id, Stage(stage), expected)
                await self._stage_changes.submit(model_id, change)
                count_promotion(change.stage.name)
                return
        await self._update_alone(actor, version_id, body, expected)
        if body.stage_id is not None:
            count_promotion(Stage(body.stage_id).name)

    async def _update_alone(
        self,
        actor: Actor,
        version_id: int,
        body: ModelVersionUpdate,
        expected: Expected,
    ) -> None:
        """`update` in a transaction of its own, run again when a promotion
        loses a race."""
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
                    ),
                    turn=self._turn(version_id) if body.stage_id is not None else None,
                )
                return
            except DuplicateKey:
                log.debug("promotion of %s lost a race (try %d)", version_id, attempt)
                count_retry("conflict")
                await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise DatabaseUnavailable(
            f"model version {version_id} could not be promoted: too much "
            "contention, retry"
        )

    async def _change_stages_batch(
        self, model_id: int, batch: list[_StageChange]
    ) -> list[bool | Exception]:
        """Apply ``batch`` in one transaction. If a promotion of another
        process won the race (the database refused a second PRODUCTION
        version, and rolled the batch back), each change runs again the way
        a change of its own does; any other error is every change's."""
        try:
            return await self._change_stages(model_id, batch)
        except DuplicateKey:
            log.debug("stage changes of model %s run one by one", model_id)

        async def alone(change: _StageChange) -> bool:
            body = ModelVersionUpdate(stage_id=change.stage)
            await self._update_alone(
                change.actor, change.version_id, body, change.expected
            )
            return True

        return await one_by_one(batch, alone)

    async def _change_stages(
        self, model_id: int, batch: list[_StageChange]
    ) -> list[bool | Exception]:
        """Apply the stage changes of ``batch``, in order, in one
        transaction, as if each ran after the one before: each is checked
        (permission, If-Match) against the versions as the changes before it
        left them, a promotion archives whichever version is in PRODUCTION
        then, and every change and archiving is an event. The versions are
        then written as they end up, the archived ones first, so that the
        database never holds two PRODUCTION versions."""
        event_ids = await self.store.next_ids(EVENTS, 2 * len(batch))
        ids = [change.version_id for change in batch]
        related = {
            "versions": Related(
                self.collection,
                {
                    "model_id": model_id,
                    "$or": [{"_id": {"$in": ids}}, {"stage_id": Stage.PRODUCTION}],
                },
                many=True,
            )
        }

        async def apply(session: Session) -> list[bool | Exception]:
            read = await self.store.read_with(
                VERSION_COUNTERS,
                {"_id": version_counter(model_id)},
                related,
                session=session,
            )
            counter, found = read if read is not None else (None, {"versions": []})
            versions = {doc["_id"]: dict(doc) for doc in found["versions"]}
            before = {id_: dict(doc) for id_, doc in versions.items()}
            answers: list[bool | Exception] = []
            requests: list[tuple[list[Change], int]] = []
            for change in batch:
                try:
                    moves = await self._stage_moves(change, versions, counter)
                except RegistryError as exc:
                    answers.append(exc)
                    continue
                answers.append(True)
                if moves:
                    requests.append((moves, change.actor.user_id))
            if not requests:
                return answers
            assert counter is not None
            count = sum(len(moves) for moves, _ in requests)
            slots = self.events.reserve(counter, count)
            await self.events.record_requests(
                requests,
                event_ids,
                slots,
                session,
                writes=tuple(self._final_stages(before, versions, slots.at)),
            )
            return answers

        return await self.store.transaction(apply, turn=version_counter(model_id))

    async def _stage_moves(
        self,
        change: _StageChange,
        versions: dict[int, Document],
        counter: Document | None,
    ) -> list[Change]:
        """Check ``change`` against ``versions`` as they stand, apply it to
        them, and return what moved: the archived incumbent, then the
        version itself; nothing for a version already at the stage."""
        hidden = missing(self.entity, change.version_id)
        doc = versions.get(change.version_id)
        if doc is None or counter is None:
            raise hidden
        await self.access.require(
            change.actor, doc["project_id"], Permission.UPDATE, hidden=hidden
        )
        check_revision(self.entity, doc, change.expected)
        if doc["stage_id"] == change.stage:
            return []
        moves: list[Change] = []
        if change.stage == Stage.PRODUCTION:
            for other in versions.values():
                if other["stage_id"] == Stage.PRODUCTION:
                    moves.append(_archived(dict(other)))
                    other["stage_id"] = Stage.ARCHIVED
                    other["revision"] = revision_of(other) + 1
        moves.append(
            Change(dict(doc), EventKind.STAGE_CHANGED, doc["stage_id"], change.stage)
        )
        doc["stage_id"] = change.stage
        doc["revision"] = revision_of(doc) + 1
        return moves

    def _final_stages(
        self, before: dict[int, Document], after: dict[int, Document], moment: datetime
    ) -> list[Update]:
        """The writes that take each changed version from ``before`` to
        ``after``: one per move (from a stage, to a stage, by so many
        revisions) shared by every version that makes it, the one to
        PRODUCTION last. Each must find all its versions still at the stage
        they were read at, and the revision is counted up, not set. The
        transaction read them: a write to any of them since (an edit of
        another field too) is a write conflict, and the batch runs again
        from its reads, checking each If-Match anew."""
        moves: dict[tuple[int, int, int], list[int]] = {}
        for id_, doc in after.items():
            steps = revision_of(doc) - revision_of(before[id_])
            if steps:
                move = (before[id_]["stage_id"], doc["stage_id"], steps)
                moves.setdefault(move, []).append(id_)
        order = sorted(moves, key=lambda move: move[1] == Stage.PRODUCTION)
        return [
            Update(
                self.collection,
                {"_id": {"$in": moves[move]}, "stage_id": move[0]},
                {
                    "$set": {"stage_id": move[1], "updated_date": moment},
                    "$inc": {"revision": move[2]},
                },
                many=True,
                required=True,
                matches=len(moves[move]),
            )
            for move in order
        ]

    async def delete(
        self, actor: Actor, version_id: int, *, expected: Expected = None
    ) -> None:
        """Delete a version; its number is never given out again."""
        event_id = await self.store.next_id(EVENTS)

        async def remove(session: Session) -> None:
            found = await self._load_for_history(
                actor, version_id, Permission.DELETE, session=session
            )
            check_revision(self.entity, found.doc, expected)
            if found.counter is None:
                raise missing(self.entity, version_id)  # the model went first
            slots = self.events.reserve(found.counter, 1)
            removal = Delete(
                self.collection,
                {"_id": version_id, **revision_query(expected)},
                required=True,
            )
            deleted = Change(found.doc, EventKind.DELETED, found.doc["stage_id"], None)
            await self.events.record(
                [deleted],
                [event_id],
                slots,
                actor.user_id,
                session,
                writes=(removal,),
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
        if body.stage_id is None:
            found = _Found(
                await self._load(actor, version_id, Permission.UPDATE, session=session)
            )
        else:
            # A stage change needs the model's counter and, for PRODUCTION,
            # the incumbent: they are read with the version, in one step.
            found = await self._load_for_history(
                actor,
                version_id,
                Permission.UPDATE,
                incumbents=body.stage_id == Stage.PRODUCTION,
                session=session,
            )
        doc = found.doc
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
        await self._change_stage(actor, found, changes, expected, event_ids, session)

    async def _change_stage(
        self,
        actor: Actor,
        found: _Found,
        changes: dict[str, Any],
        expected: Expected,
        event_ids: list[int],
        session: Session,
    ) -> None:
        """Move the version to another stage, archiving the incumbent when
        it goes to PRODUCTION, and record both in the history.

        The writes go in this order, in one step where the server allows:
        the history's claim, the archiving (the index allows a single
        PRODUCTION version at every moment), the change, the events.
        """
        doc, stage = found.doc, changes["stage_id"]
        incumbents = found.incumbents if stage == Stage.PRODUCTION else []
        moved = Change(doc, EventKind.STAGE_CHANGED, doc["stage_id"], stage)
        events = [*(_archived(other) for other in incumbents), moved]
        if found.counter is None:
            raise missing(self.entity, doc["_id"])  # its model is being deleted
        slots = self.events.reserve(found.counter, len(events))

        writes: list[Write] = []
        if incumbents:
            writes.append(self._archive(incumbents, slots.at))
        update = {"$set": {**changes, "updated_date": slots.at}}
        writes.append(self._revised(doc["_id"], update, expected=expected))
        if len(event_ids) < len(events):
            event_ids = event_ids + await self.store.next_ids(
                EVENTS, len(events) - len(event_ids)
            )
        await self.events.record(
            events, event_ids, slots, actor.user_id, session, writes=tuple(writes)
        )

    async def _load_for_history(
        self,
        actor: Actor,
        version_id: int,
        permission: Permission,
        *,
        incumbents: bool = False,
        session: Session,
    ) -> _Found:
        """The version, if ``actor`` holds ``permission`` on it, with its
        model's version counter and, with ``incumbents``, the model's other
        PRODUCTION versions (one at most, by the index), in one read."""
        related = {"counter": counter_of("model_id")}
        if incumbents:
            related["incumbents"] = Related(
                self.collection,
                {
                    "model_id": Ref("model_id"),
                    "stage_id": Stage.PRODUCTION,
                    "_id": {"$ne": version_id},
                },
                projection={"model_id": 1, "project_id": 1, "version": 1},
                many=True,
            )
        read = await self.store.read_with(
            self.collection, {"_id": version_id}, related, session=session
        )
        hidden = missing(self.entity, version_id)
        if read is None:
            raise hidden
        doc, extra = read
        await self.access.require(actor, doc["project_id"], permission, hidden=hidden)
        self.remember(version_id, doc["model_id"])
        return _Found(doc, extra["counter"], extra.get("incumbents", []))

    def _archive(self, versions: list[Document], moment: datetime) -> Update:
        return Update(
            self.collection,
            {
                "_id": {"$in": [version["_id"] for version in versions]},
                "stage_id": Stage.PRODUCTION,
            },
            {
                "$set": {"stage_id": Stage.ARCHIVED, "updated_date": moment},
                **NEXT_REVISION,
            },
            many=True,
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

    async def _registration_reads(
        self, model_id: int, batch: list[_Registration], session: Session
    ) -> tuple[Document | None, dict[str, Any]]:
        """The model's version counter (None for a missing model) with the
        iterations and resources that ``batch`` names, by `_named` key, in
        one read."""
        related: dict[str, Related] = {}
        for registration in batch:
            for collection, id_ in registration.lineage():
                related[_named(collection, id_)] = Related(
                    collection, {"_id": id_}, projection={"project_id": 1}
                )
        read = await self.store.read_with(
            VERSION_COUNTERS,
            {"_id": version_counter(model_id)},
            related,
            session=session,
        )
        return (None, {}) if read is None else read

    async def _check_registration(
        self,
        model_id: int,
        registration: _Registration,
        counter: Document | None,
        found: dict[str, Any],
    ) -> int:
        """The model's project, once the actor may register a version of
        the model from the iteration (and resource) named.

        A missing model is 404, an unreadable one too, and the lineage is
        checked after that: an iteration of another project is refused as
        such even when the resource is the model's, or the answer would
        tell that the iteration exists.
        """
        hidden = missing("model", model_id)
        if counter is None:
            raise hidden
        # A counter older than the project field belongs to no project, so
        # every lineage is refused for it (ids start at 1).
        project_id = int(counter.get("project_id", 0))
        actor, body = registration.actor, registration.body
        await self.access.require(actor, project_id, Permission.CREATE, hidden=hidden)
        iteration = found[_named("iterations", body.iteration_id)]
        if not _in_project(iteration, project_id):
            raise _foreign("iteration_id", "iteration", body.iteration_id)
        if body.resource_id is not None and not _in_project(
            found[_named("resources", body.resource_id)], project_id
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
        await self.store.bump(
            VERSION_COUNTERS,
            version_counter(doc["model_id"]),
            field="guard",
            session=session,
        )
