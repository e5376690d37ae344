"""The application factory and the lifetime of what the server holds open.

``create_app`` builds the aiohttp application from the settings. Its
cleanup contexts open, in order, the embedded store (when no MongoDB URI is
set), the MongoDB client with indexes and counters in place, and the
services with the admin user in place; they close in reverse order on
shutdown. With auth on and no admin who can log in, opening the store
raises ConfigError unless the settings name the admin to create.

Around the routes: each request is counted while it runs (a shutdown
waits for it), gets an id (echoed as X-Request-ID), one access line and
its metrics; errors become the JSON envelope; a deadline bounds the
request; with several workers, a model's writes go to the worker that owns
the model (`app.web.owners`); then the acting user is resolved.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from app import keys
from app.embedded import EmbeddedStore
from app.indexes import IndexCheck, apply_indexes
from app.metrics import scrape_registry
from app.mongo import open_client, server_features
from app.services import Services
from app.services.history import move_version_counters
from app.services.users import ensure_admin
from app.settings import Settings, check_auth
from app.store.database import Store
from app.web.middlewares import (
    InFlight,
    acting_user,
    deadline,
    echo_request_id,
    error_envelope,
    in_flight,
    observed,
)
from app.web.owners import PEERS, Peers, handing_over, to_owner
from app.web.routes import add_routes

log = logging.getLogger("deardiary.server")

MONGO_URI = web.AppKey("mongo_uri", str)


def create_app(
    settings: Settings,
    *,
    client: Any = None,
    metrics_dir: Path | None = None,
    peers: Peers | None = None,
) -> web.Application:
    """The registry application; ``client`` replaces the MongoDB connection.

    ``metrics_dir`` is the directory worker processes share their metrics
    in; without it ``/metrics`` reports this process alone. ``peers``
    places a worker among the server's others: it hands each model's
    writes to the model's owner (see `app.web.owners`). Raises ConfigError
    when auth is on without a usable secret.
    """
    check_auth(settings)
    routing = [] if peers is None else [to_owner]
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            in_flight,
            observed,
            error_envelope,
            deadline,
            *routing,
            acting_user,
        ],
    )
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = scrape_registry(metrics_dir)
    app[keys.INDEX_CHECK] = IndexCheck()
    app[keys.IN_FLIGHT] = InFlight()
    app.on_response_prepare.append(echo_request_id)
    if client is None:
        app.cleanup_ctx.append(_embedded_store if settings.embedded else _given_uri)
    app.cleanup_ctx.append(_mongo(client))
    if peers is not None:
        app[PEERS] = peers
        app.cleanup_ctx.append(handing_over(peers))
    add_routes(app)
    return app


async def _given_uri(app: web.Application) -> AsyncIterator[None]:
    uri = app[keys.SETTINGS].mongo_uri
    assert uri is not None
    log.info("using MongoDB at %s", _redacted(uri))
    app[MONGO_URI] = uri
    yield


async def _embedded_store(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    store = EmbeddedStore(settings.data_dir / "store")
    await store.start()
    app[MONGO_URI] = store.uri
    try:
        yield
    finally:
        await store.stop()


def _mongo(client: Any) -> Any:
    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = app[keys.SETTINGS]
        owned = client is None
        mongo = (
            open_client(app[MONGO_URI], timeout_ms=settings.mongo_timeout_ms)
            if owned
            else client
        )
        try:
            await _open_store(app, mongo)
            yield
        finally:
            if owned:
                mongo.close()

    return context


async def _open_store(app: web.Application, mongo: Any) -> None:
    settings = app[keys.SETTINGS]
    features = await server_features(mongo)
    if not features.transactions:
        log.warning(
            "MongoDB has no transactions (not a replica set): registry steps "
            "run one by one, unique indexes still hold the invariants"
        )
    db = mongo[settings.db_name]
    await apply_indexes(db)
    store = Store(
        db,
        features=features,
        retries=settings.transaction_retries,
        deadline_s=settings.request_timeout_seconds,
    )
    await store.seed_id_counters()
    await move_version_counters(store)

    services = Services.build(store, settings)
    app[keys.MONGO_CLIENT] = mongo
    app[keys.SERVICES] = services
    if settings.enable_auth:
        app[keys.ADMIN] = await services.users.bootstrap_admin(
            settings.admin_username, settings.admin_password
        )
    else:
        app[keys.ADMIN] = await ensure_admin(store, settings.admin_username)


def _redacted(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
