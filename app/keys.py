"""Typed keys for everything kept on the application and on requests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from app.indexes import IndexCheck
from app.services import Actor, Services
from app.settings import Settings

if TYPE_CHECKING:
    from app.web.middlewares import InFlight

SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
MONGO_CLIENT = web.AppKey("mongo_client", Any)
ADMIN = web.AppKey("admin", Actor)
# What /metrics reports, and the readiness probe's view of the indexes.
METRICS = web.AppKey("metrics", CollectorRegistry)
INDEX_CHECK = web.AppKey("index_check", IndexCheck)
# The requests being handled, which a shutdown waits for.
IN_FLIGHT: web.AppKey[InFlight] = web.AppKey("in_flight")

# The user a request acts for, set by the authentication middleware.
ACTOR = web.RequestKey("actor", Actor)
# The request's id, from X-Request-ID or made up; echoed in the answer.
REQUEST_ID = web.RequestKey("request_id", str)
# When the request's deadline is up, on the event loop's clock.
DEADLINE = web.RequestKey("deadline", float)
