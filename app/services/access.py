"""Who is asking, and what they may do in a project (SPEC 5).

Admins pass every check. Anyone else needs the matching flag of their
permission record on the owning project; without the read flag a project's
records answer exactly as if they did not exist.

An actor carries its permission flags, loaded with the user in one query
when the request starts, so the checks here never touch the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from app.errors import AdminRequired, NotFound, ProjectPermissionRequired


class Permission(StrEnum):
    """A flag of a user's permission record on a project."""

    CREATE = "create_permission"
    READ = "read_permission"
    UPDATE = "update_permission"
    DELETE = "delete_permission"


Flags = frozenset[Permission]


@dataclass(frozen=True)
class Actor:
    """The user a request acts for, with their flags per project id."""

    user_id: int
    username: str
    is_admin: bool
    permissions: Mapping[int, Flags] = field(default_factory=dict)

    @classmethod
    def from_records(
        cls,
        user_id: int,
        username: str,
        is_admin: bool,
        records: Iterable[Mapping[str, Any]],
    ) -> Actor:
        """An actor from a user's permission documents."""
        permissions = {
            int(record["project_id"]): frozenset(
                flag for flag in Permission if record.get(flag.value) is True
            )
            for record in records
        }
        return cls(user_id, username, is_admin, permissions)


class Access:
    """Checks an actor's permission flags on a project."""

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

        flags = actor.permissions.get(project_id, frozenset())
        if Permission.READ not in flags:
            raise hidden
        if permission not in flags:
            verb = permission.value.removesuffix("_permission")
            raise ProjectPermissionRequired(
                f"{verb} permission on project {project_id} is required"
            )

    async def readable_projects(self, actor: Actor) -> list[int] | None:
        """Ids of the projects ``actor`` may read; None means all of them."""
        if actor.is_admin:
            return None
        return sorted(
            project_id
            for project_id, flags in actor.permissions.items()
            if Permission.READ in flags
        )

    @staticmethod
    def require_admin(actor: Actor, action: str) -> None:
        """Raise 403 ADMIN_REQUIRED unless ``actor`` is an admin."""
        if not actor.is_admin:
            raise AdminRequired(f"only an admin may {action}")
