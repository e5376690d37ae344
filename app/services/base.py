"""What every service shares: loading a record through the access check,
pages, and the write steps that move ``updated_date`` and ``revision``.

Every change to a record adds one to its ``revision``. A caller may name the
revisions it expects (from an If-Match header); the write then carries them
in its filter, so the check and the change are one compare-and-set, and a
record that moved on answers 412 with its current entity tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.errors import NotFound, PreconditionFailed, RegistryError
from app.schemas import entity_tag
from app.services.access import Access, Actor, Permission
from app.services.history import VERSION_COUNTERS
from app.store.database import Document, Session, Store
from app.store.files import Files
from app.store.ops import Update

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

# The revisions a conditional write accepts; None accepts any.
Expected = frozenset[int] | None

# What every change adds to the changed records.
NEXT_REVISION: Document = {"$inc": {"revision": 1}}


def missing(entity: str, id_: int) -> NotFound:
    """The 404 for a record that is absent or hidden from the caller."""
    return NotFound(f"{entity} {id_} not found")


def revision_of(doc: Document) -> int:
    """A stored record's revision; 0 if stored before revisions counted."""
    return int(doc.get("revision", 0))


def revision_query(expected: Expected) -> Document:
    """The filter that matches a record only at one of ``expected``."""
    if expected is None:
        return {}
    accepted: list[int | None] = [*sorted(expected)]
    if 0 in expected:
        accepted.append(None)  # revision 0 is a record without the field
    return {"revision": {"$in": accepted}}


def stale(entity: str, doc: Document) -> PreconditionFailed:
    """The 412 for a record whose revision is not the one expected."""
    etag = entity_tag(doc["_id"], revision_of(doc))
    return PreconditionFailed(
        f"{entity} {doc['_id']} has changed; its current ETag is {etag}", etag
    )


def check_revision(entity: str, doc: Document, expected: Expected) -> None:
    """Raise 412 unless ``doc`` is at one of the ``expected`` revisions."""
    if expected is not None and revision_of(doc) not in expected:
        raise stale(entity, doc)


@dataclass(frozen=True)
class Parent:
    """The record whose children a page lists: a project, or a record
    that carries its project's id."""

    collection: str
    entity: str
    id: int

    @property
    def fields(self) -> Document:
        """What of the parent a page reads: enough to check access."""
        return {"_id": 1} if self.collection == "projects" else {"project_id": 1}

    def project_of(self, doc: Document) -> int:
        """The id of the project that owns the parent ``doc``."""
        return self.id if self.collection == "projects" else int(doc["project_id"])


class Service:
    """Base of the services: a store and the access policy."""

    collection: str
    entity: str

    def __init__(self, store: Store, access: Access) -> None:
        self.store = store
        self.access = access
        self.files = Files(store)

    async def _load(
        self,
        actor: Actor,
        id_: int,
        permission: Permission,
        *,
        session: Session = None,
    ) -> Document:
        """The record with ``id_`` if ``actor`` holds ``permission`` on it."""
        return await self._load_from(
            self.collection, self.entity, actor, id_, permission, session=session
        )

    async def _load_from(
        self,
        collection: str,
        entity: str,
        actor: Actor,
        id_: int,
        permission: Permission,
        *,
        session: Session = None,
    ) -> Document:
        """A record of ``collection`` if ``actor`` holds ``permission`` on it."""
        doc = await self.store.get(collection, id_, session=session)
        hidden = missing(entity, id_)
        if doc is None:
            raise hidden
        await self.access.require(actor, doc["project_id"], permission, hidden=hidden)
        return doc

    async def _load_experiment(
        self, actor: Actor, experiment_id: int, permission: Permission
    ) -> Document:
        """The experiment if ``actor`` holds ``permission`` on its project."""
        return await self._load_from(
            "experiments", "experiment", actor, experiment_id, permission
        )

    async def _require_project(
        self, actor: Actor, project_id: int, permission: Permission
    ) -> None:
        """Raise 404 unless the project exists and is readable, 403 without
        ``permission``."""
        hidden = missing("project", project_id)
        if not await self.store.exists("projects", {"_id": project_id}):
            raise hidden
        await self.access.require(actor, project_id, permission, hidden=hidden)

    async def _page(
        self,
        actor: Actor,
        parent: Parent,
        query: Document,
        *,
        sort: str,
        limit: int,
        offset: int,
        collection: str | None = None,
    ) -> tuple[list[Document], int]:
        """A page of this collection (or ``collection``) under ``parent``,
        if ``actor`` may read the parent; 404 as for the parent otherwise.

        The parent is read in the same round trip as the page's documents
        (see `Store.page_under`); a failed check discards the page.
        """
        found, docs, total = await self.store.page_under(
            parent.collection,
            parent.id,
            parent.fields,
            collection or self.collection,
            query,
            sort=sort,
            limit=limit,
            offset=offset,
        )
        hidden = missing(parent.entity, parent.id)
        if found is None:
            raise hidden
        await self.access.require(
            actor, parent.project_of(found), Permission.READ, hidden=hidden
        )
        return docs, total

    async def _guard_references(self, project_id: int, session: Session) -> None:
        """Write every version counter of the project.

        A deletion that checked "no version points here" and a registration
        that checked "the record exists" would otherwise both commit (write
        skew). Registrations write their model's counter, so writing the
        counters here turns that race into a write conflict, and the
        transaction that retries sees the other's result.
        """
        await self.store.update_many(
            VERSION_COUNTERS,
            {"project_id": project_id},
            {"$inc": {"guard": 1}},
            session=session,
        )

    async def _set(
        self,
        id_: int,
        changes: dict[str, Any],
        *,
        when: Any,
        expected: Expected = None,
        session: Session = None,
    ) -> None:
        """Write ``changes`` and move ``updated_date``; no changes, no write.

        With ``expected`` revisions the write is conditional: 412 if the
        record has moved on, also when there is nothing to change.
        """
        if not changes:
            if expected is not None:
                check_revision(
                    self.entity, await self._existing_doc(id_, session), expected
                )
            return
        await self._write(
            id_,
            {"$set": {**changes, "updated_date": when}},
            expected=expected,
            session=session,
        )

    async def _write(
        self,
        id_: int,
        update: Document,
        *,
        expected: Expected = None,
        session: Session = None,
    ) -> None:
        """Apply ``update`` and the next revision, if at ``expected``."""
        step = self._revised(id_, update, expected=expected)
        changed = await self.store.update(
            self.collection, step.query, step.update, session=session
        )
        if not changed:
            raise await self._refusal(id_, session)

    def _revised(
        self, id_: int, update: Document, *, expected: Expected = None
    ) -> Update:
        """The write of ``update`` and the next revision to record ``id_``,
        if at ``expected``; it must match (see `Update.required`)."""
        query = {"_id": id_, **revision_query(expected)}
        increments = {**update.get("$inc", {}), **NEXT_REVISION["$inc"]}
        return Update(
            self.collection, query, {**update, "$inc": increments}, required=True
        )

    async def _remove(
        self, id_: int, *, expected: Expected = None, session: Session = None
    ) -> None:
        """Delete the record, if at ``expected``; 404 or 412 otherwise."""
        query = {"_id": id_, **revision_query(expected)}
        if not await self.store.delete(self.collection, query, session=session):
            raise await self._refusal(id_, session)

    async def _refusal(self, id_: int, session: Session) -> RegistryError:
        """Why a write that named record ``id_`` matched nothing."""
        doc = await self.store.get(self.collection, id_, session=session)
        if doc is None:
            return missing(self.entity, id_)
        return stale(self.entity, doc)

    async def _existing_doc(self, id_: int, session: Session) -> Document:
        doc = await self.store.get(self.collection, id_, session=session)
        if doc is None:
            raise missing(self.entity, id_)
        return doc
