"""Running a test with authentication off and on.

The ``caller`` fixture of `tests.conftest` is parametrized over `MODES` and
enters `serve_as`; a test then drives the real app through that caller:

- ``auth off``: requests carry no token and act as the admin;
- ``auth on``: requests carry the token of a member who is no admin but
  holds every flag on each project it creates. Only admins may create
  and delete projects, so the admin does both on the member's behalf.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from app.server import create_app
from app.settings import Settings
from tests.conftest import (
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    AUTH_MODES,
    USER_PASSWORD,
    Caller,
    grant,
    log_in,
    with_auth,
)

AUTH_OFF, AUTH_ON = AUTH_MODES
MODES = list(AUTH_MODES)


class Member(Caller):
    """A user without admin rights, granted every flag on its projects."""

    def __init__(self, api: TestClient, token: str, user_id: int, admin: Caller):
        super().__init__(api, token, user_id)
        self.admin = admin

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if (method, path) == ("POST", "/project"):
            return self._create_project(**kwargs)
        if method == "DELETE" and path.startswith("/project/"):
            return self.admin.request(method, path, **kwargs)
        return super().request(method, path, **kwargs)

    async def _create_project(self, **kwargs: Any) -> Any:
        response = await self.admin.post("/project", **kwargs)
        if response.status == 201:
            project_id = (await response.json())["project_id"]
            await grant(self.admin, int(self.user_id or 0), project_id, "crud")
        return response


@contextlib.asynccontextmanager
async def serve_as(
    mode: str, settings: Settings, mongo: Any, middlewares: Sequence[Any] = ()
) -> AsyncIterator[Caller]:
    """The real app on ``mongo`` in ``mode``, and the caller to drive it;
    ``middlewares`` run first, around every request."""
    if mode == AUTH_ON:
        settings = with_auth(settings)
    app = create_app(settings, client=mongo)
    for middleware in reversed(middlewares):
        app.middlewares.insert(0, middleware)
    async with TestClient(TestServer(app)) as api:
        if mode == AUTH_OFF:
            yield Caller(api, None)
            return
        admin = await log_in(api, ADMIN_USERNAME, ADMIN_PASSWORD)
        yield await member_of(api, admin, "member")


async def member_of(api: TestClient, admin: Caller, username: str) -> Member:
    """A new user, logged in, who will hold every flag on its projects."""
    response = await admin.post(
        "/user", json={"username": username, "password": USER_PASSWORD}
    )
    assert response.status == 201, await response.json()
    member = await log_in(api, username, USER_PASSWORD)
    assert member.token is not None and member.user_id is not None
    return Member(api, member.token, member.user_id, admin)


def url_of(caller: Caller) -> str:
    """The base URL of the app ``caller`` drives."""
    return str(caller.api.make_url(""))
