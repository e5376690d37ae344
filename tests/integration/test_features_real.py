"""Production lookup, history, idempotency keys and If-Match on a server
with real transactions and write conflicts, and on one without them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app import keys
from app.client import connect
from app.embedded import EmbeddedStore
from app.mongo import open_client
from app.server import create_app
from app.services.history import History
from app.services.idempotency import IdempotencyLedger
from app.settings import Settings
from tests.helpers import lineage, make_project, register

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

KEY = "Idempotency-Key"
NO_STAGE, STAGING, PRODUCTION, ARCHIVED = 1, 2, 3, 4


async def _json(response: Any) -> Any:
    body = await response.json()
    return response.status, body


async def _promote(api: TestClient, version_id: int, **headers: str) -> int:
    response = await api.patch(
        f"/modelversion/{version_id}", json={"stage_id": PRODUCTION}, headers=headers
    )
    await response.read()
    return response.status


async def _events(api: TestClient, model_id: int) -> list[dict[str, Any]]:
    status, page = await _json(await api.get(f"/model/{model_id}/history?limit=200"))
    assert status == 200, page
    return list(page["data"])


async def _version(api: TestClient, version_id: int) -> dict[str, Any]:
    status, body = await _json(await api.get(f"/modelversion/{version_id}"))
    assert status == 200, body
    return dict(body)


def _most_in_production(events: list[dict[str, Any]]) -> int:
    """The most versions in PRODUCTION at once, replaying ``events``."""
    stages: dict[int, Any] = {}
    most = 0
    for event in events:
        stages[event["modelversion_id"]] = event["to_stage_id"]
        most = max(most, sum(stage == PRODUCTION for stage in stages.values()))
    return most


async def _database(api: TestClient) -> Any:
    return api.app[keys.MONGO_CLIENT][api.app[keys.SETTINGS].db_name]


# History ---------------------------------------------------------------


async def test_promotion_over_an_incumbent_writes_two_linked_events(
    real_api: TestClient,
) -> None:
    ids = await lineage(real_api)
    incumbent = await register(real_api, ids["model_id"], ids["iteration_id"])
    challenger = await register(real_api, ids["model_id"], ids["iteration_id"])
    await _promote(real_api, incumbent)

    assert await _promote(real_api, challenger) == 200

    archived, promoted = (await _events(real_api, ids["model_id"]))[-2:]
    assert (archived["modelversion_id"], archived["to_stage_id"]) == (
        incumbent,
        ARCHIVED,
    )
    assert (promoted["modelversion_id"], promoted["to_stage_id"]) == (
        challenger,
        PRODUCTION,
    )
    assert (archived["requested"], archived["caused_by"]) == (False, promoted["id"])


async def test_failure_inside_the_transaction_leaves_neither_change_nor_events(
    real_api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await lineage(real_api)
    incumbent = await register(real_api, ids["model_id"], ids["iteration_id"])
    challenger = await register(real_api, ids["model_id"], ids["iteration_id"])
    await _promote(real_api, incumbent)
    before = (
        await _events(real_api, ids["model_id"]),
        await _version(real_api, incumbent),
        await _version(real_api, challenger),
    )
    record = History.record

    async def record_then_fail(self: History, *args: Any) -> None:
        await record(self, *args)
        raise RuntimeError("injected after the events were written")

    monkeypatch.setattr(History, "record", record_then_fail)
    status = await _promote(real_api, challenger)
    monkeypatch.undo()

    assert status == 500
    after = (
        await _events(real_api, ids["model_id"]),
        await _version(real_api, incumbent),
        await _version(real_api, challenger),
    )
    assert after == before


async def test_racing_promotions_never_show_two_versions_in_production(
    real_api: TestClient,
) -> None:
    ids = await lineage(real_api)
    versions = [
        await register(real_api, ids["model_id"], ids["iteration_id"]) for _ in range(8)
    ]

    for _ in range(4):
        statuses = await asyncio.gather(*(_promote(real_api, v) for v in versions))
        assert statuses == [200] * 8

    events = await _events(real_api, ids["model_id"])
    assert _most_in_production(events) == 1
    by_id = {event["id"]: event for event in events}
    for event in events:
        if not event["requested"]:
            cause = by_id[event["caused_by"]]
            assert (cause["to_stage_id"], cause["at"]) == (PRODUCTION, event["at"])
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    status, now = await _json(
        await real_api.get(f"/model/{ids['model_id']}/production")
    )
    assert status == 200 and now["id"] == events[-1]["modelversion_id"]


async def test_production_at_each_moment_matches_the_history(
    real_api: TestClient,
) -> None:
    ids = await lineage(real_api)
    versions = [
        await register(real_api, ids["model_id"], ids["iteration_id"]) for _ in range(3)
    ]
    for version_id in [*versions, versions[0]]:
        await asyncio.sleep(0.003)
        await _promote(real_api, version_id)
    events = await _events(real_api, ids["model_id"])
    promotions = [e for e in events if e["to_stage_id"] == PRODUCTION]

    for event in promotions:
        path = f"/model/{ids['model_id']}/production?at={event['at']}"
        status, version = await _json(await real_api.get(path))
        assert status == 200, version
        assert version["id"] == event["modelversion_id"]


# If-Match ----------------------------------------------------------------


async def test_concurrent_patches_with_one_etag_one_wins(real_api: TestClient) -> None:
    ids = await lineage(real_api)
    version_id = await register(real_api, ids["model_id"], ids["iteration_id"])
    path = f"/modelversion/{version_id}"

    for round_ in range(5):
        etag = (await real_api.get(path)).headers["ETag"]

        async def patch(text: str, etag: str = etag) -> int:
            response = await real_api.patch(
                path, json={"description": text}, headers={"If-Match": etag}
            )
            await response.read()
            return response.status

        statuses = await asyncio.gather(patch(f"a{round_}"), patch(f"b{round_}"))

        assert sorted(statuses) == [200, 412], (round_, statuses)
    assert (await _version(real_api, version_id))["revision"] == 6


async def test_auto_archived_version_refuses_the_etag_read_before(
    real_api: TestClient,
) -> None:
    ids = await lineage(real_api)
    incumbent = await register(real_api, ids["model_id"], ids["iteration_id"])
    challenger = await register(real_api, ids["model_id"], ids["iteration_id"])
    await _promote(real_api, incumbent)
    read_before = (await real_api.get(f"/modelversion/{incumbent}")).headers["ETag"]
    await _promote(real_api, challenger)

    status = await _promote(real_api, incumbent, **{"If-Match": read_before})

    assert status == 412
    assert (await _version(real_api, challenger))["stage_id"] == PRODUCTION


# Idempotency keys ------------------------------------------------------------


async def test_twenty_concurrent_registrations_with_one_key_make_one_version(
    real_api: TestClient,
) -> None:
    ids = await lineage(real_api)
    path = f"/modelversion/model/{ids['model_id']}"
    body = {"iteration_id": ids["iteration_id"]}

    async def send() -> tuple[int, Any]:
        return await _json(
            await real_api.post(path, json=body, headers={KEY: "register-once"})
        )

    answers = await asyncio.gather(*(send() for _ in range(20)))
    retried = await send()

    created = [body for status, body in answers if status == 201]
    assert {status for status, _ in answers} <= {201, 409} and created, answers
    assert all(body == created[0] for body in created)
    assert retried == (201, created[0])
    _, page = await _json(await real_api.get(path))
    assert [v["version"] for v in page["data"]] == [1]


async def test_an_answer_that_cannot_be_stored_undoes_the_change(
    real_api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    project_id = await make_project(real_api)
    path = f"/model/project/{project_id}"
    complete = IdempotencyLedger.complete

    async def complete_then_fail(
        self: IdempotencyLedger, *args: Any, **kw: Any
    ) -> bool:
        await complete(self, *args, **kw)
        raise RuntimeError("injected after the answer was stored")

    monkeypatch.setattr(IdempotencyLedger, "complete", complete_then_fail)
    response = await real_api.post(path, json={"name": "clf"}, headers={KEY: "k"})
    monkeypatch.undo()

    assert response.status == 500
    _, page = await _json(await real_api.get(path))
    assert page["data"] == []
    db = await _database(real_api)
    assert await db.idempotency_keys.count_documents({}) == 0


@pytest.fixture
async def dropping_api(secantus: EmbeddedStore) -> AsyncIterator[TestClient]:
    """The app on SecantusDB, dropping the connection after the first keyed
    write has committed."""
    settings = Settings(mongo_uri=secantus.uri, db_name="it_features_dropping")
    mongo = open_client(secantus.uri, timeout_ms=5000)
    dropped: list[bool] = []

    @web.middleware
    async def drop_first_answer(request: web.Request, handler: Any) -> Any:
        response = await handler(request)
        if KEY in request.headers and not dropped:
            dropped.append(True)
            assert request.transport is not None
            request.transport.close()
        return response

    app = create_app(settings, client=mongo)
    app.middlewares.insert(0, drop_first_answer)
    try:
        async with TestClient(TestServer(app)) as api:
            yield api
        assert dropped == [True]
    finally:
        await mongo.drop_database(settings.db_name)
        mongo.close()


async def test_retry_after_the_connection_dropped_after_commit_replays(
    dropping_api: TestClient,
) -> None:
    ids = await lineage(dropping_api)

    async with connect(str(dropping_api.make_url(""))) as client:
        version_id = await client.create_modelversion(
            ids["model_id"], ids["iteration_id"]
        )
        versions = await client.get_modelversions(ids["model_id"])

    assert [v.id for v in versions] == [version_id]


# Without transactions --------------------------------------------------------


async def test_every_feature_works_without_transactions(
    standalone_api: TestClient,
) -> None:
    api = standalone_api
    ids = await lineage(api)
    first = await register(api, ids["model_id"], ids["iteration_id"])
    second = await register(api, ids["model_id"], ids["iteration_id"])
    await _promote(api, first)
    stale = (await api.get(f"/modelversion/{second}")).headers["ETag"]
    await _promote(api, second)

    production = await api.get(f"/model/{ids['model_id']}/production")
    cached = await api.get(
        f"/model/{ids['model_id']}/production",
        headers={"If-None-Match": production.headers["ETag"]},
    )
    refused = await _promote(api, second, **{"If-Match": stale})
    replays = [
        await _json(
            await api.post(
                f"/model/project/{ids['project_id']}",
                json={"name": "again"},
                headers={KEY: "k"},
            )
        )
        for _ in range(2)
    ]

    assert (await production.json())["id"] == second
    assert cached.status == 304
    assert refused == 412
    assert replays[0] == replays[1] and replays[0][0] == 201
    assert _most_in_production(await _events(api, ids["model_id"])) == 1
