"""Who is asking, and what they may do in a project (SPEC 5).

Admins pass every check. Anyone else needs the matching flag of their
permission record on the owning project; without the read flag a project's
records answer exactly as if they did not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.errors import AdminRequired, NotFound, ProjectPermissionRequired
from app.store.database import Store


class Permission(StrEnum):
    """A flag of a user's permission record on a project."""

    CREATE = "create_permission"
    READ = "read_permission"
    UPDATE = "update_permission"
    DELETE = "delete_permission"


@dataclass(frozen=True)
class Actor:
    """The user a request acts for."""

    user_id: int
    username: str
    is_admin: bool


class Access:
    """Checks an actor's permission flags on a project."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def require(
        self,
        actor: Actor,
        project_id: int,
        permission: Permission,
        *,
        hidden: NotFound,
    ) -> None:
        """Raise ``hidden`` without read access, 403 without ``permission``.

        ``hidden`` is the error the caller raises for a missing record, so
        that an unreadable record is indistinguishable from an absent one.
        """
        if actor.is_admin:
            return

        flags = await self._store.find_one(
            "userpermissions", {"user_id": actor.user_id, "project_id": project_id}
        )
        if flags is None or not flags.get(Permission.READ):
            raise hidden
        if not flags.get(permission):
            raise ProjectPermissionRequired(
                f"{permission.value.split('_')[0]} permission on project "
                f"{project_id} is required"
            )

    async def readable_projects(self, actor: Actor) -> list[int] | None:
        """Ids of the projects ``actor`` may read; None means all of them."""
        if actor.is_admin:
            return None
        records = await self._store.find_all(
            "userpermissions",
            {"user_id": actor.user_id, Permission.READ.value: True},
            projection={"project_id": 1},
        )
        return [int(record["project_id"]) for record in records]

    @staticmethod
    def require_admin(actor: Actor, action: str) -> None:
        """Raise 403 ADMIN_REQUIRED unless ``actor`` is an admin."""
        if not actor.is_admin:
            raise AdminRequired(f"only an admin may {action}")
