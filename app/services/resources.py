"""Resources: artifact bytes of an experiment, kept in GridFS.

Bytes stream in and out; they are never held whole in memory. Upload
writes the bytes first and the record last, so a record always has its
bytes; a failed upload leaves neither.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from app.errors import Conflict, RegistryError
from app.schemas import Page, Resource, ResourceCreate, ResourceUpdate, now
from app.services.access import Actor, Permission
from app.services.base import Expected, Parent, Service, check_revision, missing
from app.store.database import Session


class ResourceService(Service):
    collection = "resources"
    entity = "resource"

    async def get(self, actor: Actor, resource_id: int) -> Resource:
        """The resource's record, if the actor may read its project."""
        doc = await self._load(actor, resource_id, Permission.READ)
        return Resource.from_doc(doc)  # type: ignore[no-any-return]

    async def page(
        self, actor: Actor, experiment_id: int, *, limit: int, offset: int
    ) -> Page[Resource]:
        """The experiment's resources, by id."""
        docs, total = await self._page(
            actor,
            Parent("experiments", "experiment", experiment_id),
            {"experiment_id": experiment_id},
            sort="_id",
            limit=limit,
            offset=offset,
        )
        data = [Resource.from_doc(doc) for doc in docs]
        return Page(data=data, total=total, limit=limit, offset=offset)

    async def create(
        self,
        actor: Actor,
        experiment_id: int,
        body: ResourceCreate,
        chunks: AsyncIterator[bytes],
        *,
        max_bytes: int,
    ) -> int:
        """Stream a file into the experiment and record it."""
        experiment = await self._load_experiment(
            actor, experiment_id, Permission.CREATE
        )
        project_id = experiment["project_id"]

        resource_id = await self.store.next_id(self.collection)
        stored = await self.files.upload(
            resource_id,
            body.name,
            chunks,
            max_bytes=max_bytes,
            metadata={"project_id": project_id, "experiment_id": experiment_id},
        )

        doc = {
            "_id": resource_id,
            "experiment_id": experiment_id,
            "project_id": project_id,
            **body.model_dump(),
            "size_bytes": stored.size_bytes,
            "content_hash": stored.content_hash,
            "created_date": now(),
            "revision": 1,
        }

        async def record(session: Session) -> int:
            if not await self.store.exists(
                "experiments", {"_id": experiment_id}, session=session
            ):
                raise missing("experiment", experiment_id)
            await self.store.insert(self.collection, doc, session=session)
            return resource_id

        try:
            return await self.store.transaction(record)
        except RegistryError:
            await self.files.delete([resource_id])
            raise

    async def stored_hash(self, resource_id: int) -> str | None:
        """The sha256 of a resource's bytes, None if it is gone.

        No permission check: only a repeat of the caller's own upload asks,
        to compare bytes, and it learns nothing but whether they match.
        """
        doc = await self.store.find_one(
            self.collection, {"_id": resource_id}, projection={"content_hash": 1}
        )
        return None if doc is None else str(doc["content_hash"])

    async def open(
        self, actor: Actor, resource_id: int
    ) -> tuple[Resource, AsyncIterator[bytes]]:
        """The record and a stream of the resource's bytes."""
        doc = await self._load(actor, resource_id, Permission.READ)
        return Resource.from_doc(doc), self.files.download(resource_id)

    async def update(
        self,
        actor: Actor,
        resource_id: int,
        body: ResourceUpdate,
        *,
        expected: Expected = None,
    ) -> None:
        """Rename or describe a resource; its bytes never change."""

        async def apply(session: Session) -> None:
            await self._load(actor, resource_id, Permission.UPDATE, session=session)
            await self._set(
                resource_id,
                body.changes(),
                when=now(),
                expected=expected,
                session=session,
            )

        await self.store.transaction(apply, optional=True)

    async def delete(
        self, actor: Actor, resource_id: int, *, expected: Expected = None
    ) -> None:
        """Delete a resource and its bytes unless a model version uses it."""

        async def remove(session: Session) -> None:
            doc = await self._load(
                actor, resource_id, Permission.DELETE, session=session
            )
            check_revision(self.entity, doc, expected)
            if await self.store.exists(
                "modelversions", {"resource_id": resource_id}, session=session
            ):
                raise Conflict(
                    f"resource {resource_id} is the artifact of a model version"
                )

            await self._guard_references(doc["project_id"], session)
            await self._remove(resource_id, expected=expected, session=session)

        await self.store.transaction(remove)
        await self.files.delete([resource_id])
