"""Handlers of the auth routes and of permissions addressed by user and
project, the shapes the generic builders do not cover."""

from __future__ import annotations

from aiohttp import web

from app import keys
from app.schemas import Credentials, UserPermissionCreate
from app.web import responses
from app.web.handlers import actor, service
from app.web.idempotency import once
from app.web.parsing import path_id, read_body


async def login(request: web.Request) -> web.StreamResponse:
    """POST /auth: a token for a username and password."""
    credentials = await read_body(request, Credentials)
    envelope = await request.app[keys.SERVICES].auth.login(credentials)
    return responses.record(envelope)


async def refresh(request: web.Request) -> web.StreamResponse:
    """POST /auth/refresh: a new token for the holder of a valid one."""
    envelope = await request.app[keys.SERVICES].auth.refresh(actor(request))
    return responses.record(envelope)


async def me(request: web.Request) -> web.StreamResponse:
    """GET /auth/me: the user the request acts for."""
    who = actor(request)
    user = await service(request, "users").get(who, who.user_id)
    return responses.record(user)


async def permission_of(request: web.Request) -> web.StreamResponse:
    """GET /userpermission/user/{user_id}/project/{project_id}."""
    found = await service(request, "userpermissions").get_for(
        actor(request),
        path_id(request, "user", "user_id"),
        path_id(request, "project", "project_id"),
    )
    return responses.tagged(request, found)


async def grant(request: web.Request) -> web.StreamResponse:
    """POST /userpermission/user/{user_id}/project/{project_id}."""
    user_id = path_id(request, "user", "user_id")
    project_id = path_id(request, "project", "project_id")
    body = await read_body(request, UserPermissionCreate)
    create = service(request, "userpermissions").create

    def answer(new_id: int) -> web.Response:
        location = f"/userpermission/{new_id}"
        return responses.created(request, "userpermission", new_id, location)

    return await once(
        request,
        body,
        lambda: create(actor(request), user_id, project_id, body),
        answer,
    )
