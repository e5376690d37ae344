"""Projects: the unit of ownership and permission.

Creating, renaming and deleting a project is for admins; reading one needs
the read flag. Deleting a project removes everything under it.
"""

from __future__ import annotations

from app.errors import Conflict
from app.schemas import Page, Project, ProjectCreate, ProjectUpdate, now
from app.services.access import Actor, Permission
from app.services.base import Expected, Service, missing
from app.services.history import VERSION_COUNTERS
from app.store.database import Session
from app.store.errors import DuplicateKey

# Collections whose documents carry the owning project's id.
OWNED = (
    "modelversions",
    "models",
    "resources",
    "iterations",
    "experiments",
    "userpermissions",
    VERSION_COUNTERS,
    "modelversion_events",
)


class ProjectService(Service):
    collection = "projects"
    entity = "project"

    async def get(self, actor: Actor, project_id: int) -> Project:
        """The project, if the actor may read it."""
        doc = await self.store.get(self.collection, project_id)
        hidden = missing(self.entity, project_id)
        if doc is None:
            raise hidden
        await self.access.require(actor, project_id, Permission.READ, hidden=hidden)
        return Project.from_doc(doc)  # type: ignore[no-any-return]

    async def page(self, actor: Actor, *, limit: int, offset: int) -> Page[Project]:
        """The projects the actor may read, by id."""
        readable = await self.access.readable_projects(actor)
        query = {} if readable is None else {"_id": {"$in": readable}}
        docs, total = await self.store.page(
            self.collection, query, sort="_id", limit=limit, offset=offset
        )
        data = [Project.from_doc(doc) for doc in docs]
        return Page(data=data, total=total, limit=limit, offset=offset)

    async def create(self, actor: Actor, body: ProjectCreate) -> int:
        """Create a project; names are unique."""
        self.access.require_admin(actor, "create projects")

        project_id = await self.store.next_id(self.collection)
        doc = {
            "_id": project_id,
            **body.model_dump(),
            "created_date": now(),
            "revision": 1,
        }

        async def insert(session: Session) -> int:
            await self.store.insert(self.collection, doc, session=session)
            return project_id

        try:
            return await self.store.transaction(insert, optional=True)
        except DuplicateKey as exc:
            raise Conflict(f"a project named {body.name!r} exists") from exc

    async def update(
        self,
        actor: Actor,
        project_id: int,
        body: ProjectUpdate,
        *,
        expected: Expected = None,
    ) -> None:
        """Rename or describe a project."""
        self.access.require_admin(actor, "update projects")

        async def apply(session: Session) -> None:
            query = {"_id": project_id}
            if not await self.store.exists(self.collection, query, session=session):
                raise missing(self.entity, project_id)
            await self._set(
                project_id,
                body.changes(),
                when=now(),
                expected=expected,
                session=session,
            )

        try:
            await self.store.transaction(apply, optional=True)
        except DuplicateKey as exc:
            raise Conflict(f"a project named {body.name!r} exists") from exc

    async def delete(
        self, actor: Actor, project_id: int, *, expected: Expected = None
    ) -> None:
        """Delete the project and everything under it, bytes included."""
        self.access.require_admin(actor, "delete projects")

        async def remove(session: Session) -> list[int]:
            await self._remove(project_id, expected=expected, session=session)
            files = await self.store.find_all(
                "resources",
                {"project_id": project_id},
                projection={"_id": 1},
                session=session,
            )
            for collection in OWNED:
                await self.store.delete(
                    collection, {"project_id": project_id}, session=session
                )
            return [doc["_id"] for doc in files]

        file_ids = await self.store.transaction(remove)
        # Bytes go after the records commit: a transaction of gigabytes
        # would outgrow the server's limits, and no record points at them.
        await self.files.delete(file_ids)
