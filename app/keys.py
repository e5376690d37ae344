"""Typed keys for everything kept on the application and on requests."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from app.services import Actor, Services
from app.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
MONGO_CLIENT = web.AppKey("mongo_client", Any)
ADMIN = web.AppKey("admin", Actor)

# The user a request acts for, set by the authentication middleware.
ACTOR = web.RequestKey("actor", Actor)
