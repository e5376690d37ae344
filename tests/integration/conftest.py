"""Fixtures for tests against a real SecantusDB server, started once.

The store runs as a child process on a free loopback port for the whole test
session; each test gets its own database on it, so tests stay independent.
Two servers run side by side: one with transactions (like a replica set)
and one that presents itself as a standalone mongod without them.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from app.embedded import EmbeddedStore
from app.mongo import open_client
from app.server import create_app
from app.settings import Settings

_databases = itertools.count(1)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def secantus() -> AsyncIterator[EmbeddedStore]:
    """A SecantusDB replica-set-like server for the whole session."""
    store = EmbeddedStore(":memory:")
    await store.start()
    yield store
    await store.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def secantus_standalone() -> AsyncIterator[EmbeddedStore]:
    """A SecantusDB server that presents itself as a standalone mongod."""
    store = EmbeddedStore(":memory:", standalone=True)
    await store.start()
    yield store
    await store.stop()


def _settings(uri: str) -> Settings:
    return Settings(mongo_uri=uri, db_name=f"it_{next(_databases)}")


@pytest.fixture
async def real_api(secantus: EmbeddedStore) -> AsyncIterator[TestClient]:
    """The app factory on SecantusDB, with transactions."""
    async with _Served(_settings(secantus.uri)) as client:
        yield client


@pytest.fixture
async def standalone_api(
    secantus_standalone: EmbeddedStore,
) -> AsyncIterator[TestClient]:
    """The app factory on a server without transactions."""
    async with _Served(_settings(secantus_standalone.uri)) as client:
        yield client


class _Served:
    """The real app on a fresh database of ``settings.mongo_uri``.

    The app gets its own driver client, so that the database can be dropped
    after the app has shut down, whatever the test left behind.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._mongo: Any = open_client(settings.mongo_uri or "", timeout_ms=5000)
        self._client: TestClient | None = None

    async def __aenter__(self) -> TestClient:
        app = create_app(self._settings, client=self._mongo)
        self._client = TestClient(TestServer(app))
        try:
            await self._client.start_server()
        except BaseException:
            await self._close()
            raise
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        try:
            if self._client is not None:
                await self._client.close()
            await self._mongo.drop_database(self._settings.db_name)
        finally:
            self._mongo.close()
