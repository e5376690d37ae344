"""Fixtures: the real application on mongomock-motor, driven over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from mongomock_motor import AsyncMongoMockClient, enabled_gridfs_integration

from app.server import create_app
from app.settings import Settings


@pytest.fixture
def settings() -> Settings:
    """Settings for a test server; tests may replace fields with model_copy."""
    return Settings(db_name="deardiary_test", max_body_bytes=64 * 1024)


@pytest.fixture
def gridfs_on_mock() -> Iterator[None]:
    with enabled_gridfs_integration():
        yield


@pytest.fixture
async def mongo(gridfs_on_mock: None) -> AsyncIterator[Any]:
    yield AsyncMongoMockClient()


@pytest.fixture
async def api(settings: Settings, mongo: Any) -> AsyncIterator[TestClient]:
    """An HTTP client on the real app factory, backed by mongomock-motor."""
    app = create_app(settings, client=mongo)
    async with TestClient(TestServer(app)) as client:
        yield client
