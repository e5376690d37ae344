"""Permission records: one per user and project, managed by admins.

A record's flags take effect on the user's next request. Without the read
flag the other flags grant nothing: the project stays invisible.
"""

from __future__ import annotations

from app.errors import Conflict, NotFound
from app.schemas import UserPermission, UserPermissionCreate, UserPermissionUpdate
from app.services.access import Actor
from app.services.base import Expected, Service, check_revision, missing
from app.store.database import Document, Session
from app.store.errors import DuplicateKey


class PermissionService(Service):
    collection = "userpermissions"
    entity = "userpermission"

    async def get(self, actor: Actor, permission_id: int) -> UserPermission:
        """The permission record."""
        self.access.require_admin(actor, "read permissions")
        return UserPermission.from_doc(  # type: ignore[no-any-return]
            await self._existing(permission_id)
        )

    async def get_for(
        self, actor: Actor, user_id: int, project_id: int
    ) -> UserPermission:
        """The record of a user on a project."""
        self.access.require_admin(actor, "read permissions")
        doc = await self.store.find_one(
            self.collection, {"user_id": user_id, "project_id": project_id}
        )
        if doc is None:
            raise _no_record(user_id, project_id)
        return UserPermission.from_doc(doc)  # type: ignore[no-any-return]

    async def create(
        self,
        actor: Actor,
        user_id: int,
        project_id: int,
        body: UserPermissionCreate,
    ) -> int:
        """Grant a user flags on a project; a second record is 409."""
        self.access.require_admin(actor, "grant permissions")
        if not await self.store.exists("users", {"_id": user_id}):
            raise missing("user", user_id)
        if not await self.store.exists("projects", {"_id": project_id}):
            raise missing("project", project_id)

        permission_id = await self.store.next_id(self.collection)
        doc = {
            "_id": permission_id,
            "user_id": user_id,
            "project_id": project_id,
            **body.model_dump(),
            "revision": 1,
        }

        async def insert(session: Session) -> int:
            await self.store.insert(self.collection, doc, session=session)
            return permission_id

        try:
            return await self.store.transaction(insert, optional=True)
        except DuplicateKey as exc:
            raise Conflict(
                f"user {user_id} has a permission record on project "
                f"{project_id}; update that one"
            ) from exc

    async def update(
        self,
        actor: Actor,
        permission_id: int,
        body: UserPermissionUpdate,
        *,
        expected: Expected = None,
    ) -> None:
        """Change some flags of a record."""
        self.access.require_admin(actor, "change permissions")
        changes = body.changes()

        async def apply(session: Session) -> None:
            if changes:
                update = {"$set": changes}
                await self._write(
                    permission_id, update, expected=expected, session=session
                )
                return
            doc = await self._existing_doc(permission_id, session)
            check_revision(self.entity, doc, expected)

        await self.store.transaction(apply, optional=True)

    async def delete(
        self, actor: Actor, permission_id: int, *, expected: Expected = None
    ) -> None:
        """Remove a record; the user loses every flag on that project."""
        self.access.require_admin(actor, "delete permissions")
        await self._remove(permission_id, expected=expected)

    async def _existing(self, permission_id: int) -> Document:
        doc = await self.store.get(self.collection, permission_id)
        if doc is None:
            raise missing(self.entity, permission_id)
        return doc


def _no_record(user_id: int, project_id: int) -> NotFound:
    return NotFound(f"user {user_id} has no permission record on project {project_id}")
