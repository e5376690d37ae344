"""Probes and metrics: readiness for load balancers, ``/metrics`` for
Prometheus. Liveness (``GET /health``) is in the route table and never
touches the database.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from app import keys
from app.errors import DatabaseUnavailable
from app.metrics import CONTENT_TYPE_LATEST, exposition


async def ready(request: web.Request) -> web.StreamResponse:
    """GET /health/ready: 200 when MongoDB answers and the indexes exist."""
    store = request.app[keys.SERVICES].store
    if not await store.ping():
        raise DatabaseUnavailable("MongoDB does not answer a ping")

    missing = await request.app[keys.INDEX_CHECK].missing(store.db)
    if missing:
        raise DatabaseUnavailable(f"indexes missing: {', '.join(missing)}")
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.StreamResponse:
    """GET /metrics: every sample, in Prometheus's text format."""
    # With several workers this reads one file per process: off the loop.
    body = await asyncio.to_thread(exposition, request.app[keys.METRICS])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
