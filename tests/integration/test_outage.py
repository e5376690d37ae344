"""A MongoDB outage seen from a running server: bounded 503s, then
recovery on its own once the database is back, with no restart."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from app.embedded import EmbeddedStore, free_port
from tests.integration.serving import Server, Servers, fetch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MONGO_TIMEOUT_MS = 1000
REQUEST_TIMEOUT_S = 3
# What a client waits at most: the server's bound, with room for a noisy
# machine. A request that takes longer fails the test: the 503 did not
# come within the bound.
CLIENT_BOUND = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S + 7)
LOAD_CLIENTS = 4
RECOVERY_TRIES = 150


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    async with Servers(tmp_path) as started:
        yield started


class Registry:
    """A model with one registered version on a running server."""

    def __init__(self, server: Server, http: aiohttp.ClientSession) -> None:
        self.url = server.url
        self.http = http
        self.ids: dict[str, int] = {}

    async def create(self, key: str, path: str, body: object) -> int:
        status, payload = await fetch(self.http, "POST", self.url + path, json=body)
        assert status == 201, payload
        self.ids[key] = int(next(iter(payload.values())))
        return self.ids[key]

    async def populate(self) -> None:
        project = await self.create("project", "/project", {"name": "p"})
        experiment = await self.create(
            "experiment", f"/experiment/project/{project}", {"name": "e"}
        )
        await self.create("iteration", f"/iteration/experiment/{experiment}", {})
        await self.create("model", f"/model/project/{project}", {"name": "m"})
        await self.register()

    async def register(self) -> tuple[int, dict[str, object]]:
        path = f"/modelversion/model/{self.ids['model']}"
        return await fetch(
            self.http,
            "POST",
            self.url + path,
            json={"iteration_id": self.ids["iteration"]},
        )

    async def read(self) -> tuple[int, dict[str, object]]:
        return await fetch(self.http, "GET", f"{self.url}/model/{self.ids['model']}")

    async def promote(self, stage: int) -> tuple[int, dict[str, object]]:
        path = f"/modelversion/{self.ids['modelversion']}"
        return await fetch(
            self.http, "PATCH", self.url + path, json={"stage_id": stage}
        )


async def _load(registry: Registry, stop: asyncio.Event, seen: Counter[str]) -> None:
    """Read and promote in a loop until told to stop; count the outcomes."""
    for turn in range(10_000):
        if stop.is_set():
            return
        if turn % 2:
            status, body = await registry.read()
        else:
            status, body = await registry.promote(2 + turn % 4 // 2)
        seen[f"{status} {body.get('code', '')}".strip()] += 1


async def test_outage_answers_503_in_bound_and_recovers_without_restart(
    servers: Servers, tmp_path: Path
) -> None:
    store = EmbeddedStore(tmp_path / "store", port=free_port())
    await store.start()
    try:
        server = await servers.start(
            DEARDIARY_MONGO_URI=store.uri,
            DEARDIARY_WORKERS="2",
            DEARDIARY_MONGO_TIMEOUT_MS=str(MONGO_TIMEOUT_MS),
            DEARDIARY_REQUEST_TIMEOUT_SECONDS=str(REQUEST_TIMEOUT_S),
        )
        async with aiohttp.ClientSession(timeout=CLIENT_BOUND) as http:
            registry = Registry(server, http)
            await registry.populate()
            registry.ids["modelversion"] = await _one_version(registry)

            seen = await _outage_under_load(registry, store)
            during = await _probe(registry, http, server)

            store = EmbeddedStore(tmp_path / "store", port=store.port)
            await store.start()
            await _recovered(registry)
            after = await _probe(registry, http, server)
    finally:
        await store.stop()

    assert set(seen) <= {"200", "503 DATABASE_UNAVAILABLE"}, seen
    assert seen["503 DATABASE_UNAVAILABLE"] > 0, seen
    assert during == {
        "health": 200,
        "ready": 503,
        "read": "503 DATABASE_UNAVAILABLE",
        "promote": "503 DATABASE_UNAVAILABLE",
        "register": "503 DATABASE_UNAVAILABLE",
    }
    assert after == {
        "health": 200,
        "ready": 200,
        "read": "200",
        "promote": "200",
        "register": "201",
    }
    assert server.process.returncode is None, "the server restarted"


async def _one_version(registry: Registry) -> int:
    path = f"/modelversion/model/{registry.ids['model']}"
    status, page = await fetch(registry.http, "GET", registry.url + path)
    assert status == 200, page
    return int(page["data"][0]["id"])


async def _outage_under_load(registry: Registry, store: EmbeddedStore) -> Counter[str]:
    """Stop the store while clients read and promote; their outcomes."""
    stop, seen = asyncio.Event(), Counter[str]()
    clients = [
        asyncio.create_task(_load(registry, stop, seen)) for _ in range(LOAD_CLIENTS)
    ]
    try:
        await asyncio.sleep(1)
        await store.stop()
        # Long enough for every client to meet the outage a few times.
        await asyncio.sleep(REQUEST_TIMEOUT_S * 2)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    return seen


async def _probe(
    registry: Registry, http: aiohttp.ClientSession, server: Server
) -> dict[str, object]:
    async with http.get(f"{server.url}/health") as response:
        health = response.status
    async with http.get(f"{server.url}/health/ready") as response:
        ready = response.status
    outcomes = {}
    for name, call in (
        ("read", registry.read),
        ("promote", lambda: registry.promote(3)),
        ("register", registry.register),
    ):
        status, body = await call()
        outcomes[name] = f"{status} {body.get('code', '')}".strip()
    return {"health": health, "ready": ready, **outcomes}


async def _recovered(registry: Registry) -> None:
    """Wait, bounded, until reads succeed again."""
    for _ in range(RECOVERY_TRIES):
        with contextlib.suppress(aiohttp.ClientError):
            status, _ = await registry.read()
            if status == 200:
                return
        await asyncio.sleep(0.2)
    raise AssertionError("the server did not recover")
