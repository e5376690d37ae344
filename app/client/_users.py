"""Logins, users and permission records (SPEC 5).

With auth off the server acts as its admin for everyone: no token is
needed, and the login routes answer 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, overload

from app.client._base import MAX_LIMIT, Calls, IfMatch, Pagination, fields, path_id
from app.client._http import NO_RESPONSE, UNEXPECTED_RESPONSE, ClientError
from app.schemas import Page, TokenEnvelope, User, UserPermission


class AuthCalls(Calls):
    """The /auth routes."""

    @property
    def token(self) -> str | None:
        """The bearer token the calls carry, or None."""
        return self._http.token

    async def login(self, username: str, password: str) -> TokenEnvelope:
        """Log in; later calls carry the new token."""
        body = {"username": username, "password": password}
        return await self._take_token("/auth", body)

    async def refresh_token(self) -> TokenEnvelope:
        """Exchange the current token for a fresh one; later calls carry it."""
        return await self._take_token("/auth/refresh", {})

    async def whoami(self) -> User:
        """The user the calls act as."""
        raw = await self._http.get("/auth/me")
        return User.model_validate_json(raw)

    async def _take_token(self, path: str, body: dict[str, Any]) -> TokenEnvelope:
        answer = await self._http.send("POST", path, body)
        try:
            envelope = TokenEnvelope.model_validate(answer)
        except ValueError as exc:
            raise ClientError(
                NO_RESPONSE,
                UNEXPECTED_RESPONSE,
                "no token in the answer",
                self._http.describe("POST", path),
            ) from exc
        self._http.token = envelope.access_token
        return envelope


class UserCalls(Calls):
    """The /user routes."""

    async def get_user(self, id: int) -> User | None:
        """The user, or None if there is none with this id."""
        return await self._record(User, f"/user/{path_id(id)}")

    @overload
    async def get_users(self) -> list[User]: ...
    @overload
    async def get_users(self, page: Pagination) -> Page[User]: ...
    async def get_users(self, page: Pagination | None = None) -> Any:
        """The first page of users (admins only), or the page named."""
        return await self._listing(User, "/user", page)

    def iter_users(self, *, page_size: int = MAX_LIMIT) -> AsyncIterator[User]:
        """Every user, by id (admins only)."""
        return self._walk(User, "/user", page_size)

    async def create_user(
        self,
        username: str,
        password: str,
        first_name: str | None = None,
        last_name: str | None = None,
    ) -> int:
        """Create a user who is not an admin (admins only); the user's id."""
        body = fields(
            username=username,
            password=password,
            first_name=first_name,
            last_name=last_name,
        )
        return await self._create("/user", "user_id", body)

    async def update_user(
        self,
        id: int,
        password: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
        is_admin: bool | None = None,
        *,
        if_match: IfMatch = None,
    ) -> None:
        """Change the fields given; ``is_admin`` only an admin may set."""
        body = fields(
            password=password,
            first_name=first_name,
            last_name=last_name,
            is_admin=is_admin,
        )
        await self._update(f"/user/{path_id(id)}", body, if_match)

    async def delete_user(self, id: int, *, if_match: IfMatch = None) -> None:
        """Delete the user and their permission records."""
        await self._delete(f"/user/{path_id(id)}", if_match)


class PermissionCalls(Calls):
    """The /userpermission routes (admins only)."""

    async def get_userpermission(
        self, user_id: int, project_id: int
    ) -> UserPermission | None:
        """The user's permission record on the project, or None."""
        return await self._record(UserPermission, _pair(user_id, project_id))

    async def get_userpermission_by_id(self, id: int) -> UserPermission | None:
        """The permission record with this id, or None."""
        return await self._record(UserPermission, f"/userpermission/{path_id(id)}")

    async def create_userpermission(
        self,
        user_id: int,
        project_id: int,
        create_permission: bool = False,
        read_permission: bool = False,
        update_permission: bool = False,
        delete_permission: bool = False,
    ) -> int:
        """Grant the user flags on the project; the record's id."""
        body = {
            "create_permission": create_permission,
            "read_permission": read_permission,
            "update_permission": update_permission,
            "delete_permission": delete_permission,
        }
        path = _pair(user_id, project_id)
        return await self._create(path, "userpermission_id", body)

    async def update_userpermission(
        self,
        id: int,
        create_permission: bool | None = None,
        read_permission: bool | None = None,
        update_permission: bool | None = None,
        delete_permission: bool | None = None,
        *,
        if_match: IfMatch = None,
    ) -> None:
        """Change the flags given; None leaves a flag as it is."""
        body = fields(
            create_permission=create_permission,
            read_permission=read_permission,
            update_permission=update_permission,
            delete_permission=delete_permission,
        )
        await self._update(f"/userpermission/{path_id(id)}", body, if_match)

    async def delete_userpermission(self, id: int, *, if_match: IfMatch = None) -> None:
        """Remove the record; the user loses every flag on its project."""
        await self._delete(f"/userpermission/{path_id(id)}", if_match)


def _pair(user_id: int, project_id: int) -> str:
    return f"/userpermission/user/{path_id(user_id)}/project/{path_id(project_id)}"
