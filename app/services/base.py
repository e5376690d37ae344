"""What every service shares: loading a record through the access check,
pages, and the update step that moves ``updated_date``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from app.errors import NotFound
from app.services.access import Access, Actor, Permission
from app.store.database import Document, Session, Store
from app.store.files import Files

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def missing(entity: str, id_: int) -> NotFound:
    """The 404 for a record that is absent or hidden from the caller."""
    return NotFound(f"{entity} {id_} not found")


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
        parent_check: Awaitable[Any],
        query: Document,
        *,
        sort: str,
        limit: int,
        offset: int,
    ) -> tuple[list[Document], int]:
        """A page of this collection once ``parent_check`` passes.

        The check and the page's queries run side by side; a failed check
        discards the page.
        """
        _, (docs, total) = await asyncio.gather(
            parent_check,
            self.store.page(
                self.collection, query, sort=sort, limit=limit, offset=offset
            ),
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
            "counters",
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
        session: Session = None,
    ) -> None:
        """Write ``changes`` and move ``updated_date``; no changes, no write."""
        if not changes:
            return
        await self.store.update(
            self.collection,
            {"_id": id_},
            {"$set": {**changes, "updated_date": when}},
            session=session,
        )
