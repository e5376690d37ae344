"""Production lookup, history, idempotency keys and If-Match on a server
with real transactions and write conflicts, and on one without them."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
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
from app.web.owners import Peers
from tests.auth_modes import AUTH_ON, MODES, Member, member_of, serve_as, url_of
from tests.conftest import Caller, grant
from tests.helpers import lineage, make_project, register

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

KEY = "Idempotency-Key"
NO_STAGE, STAGING, PRODUCTION, ARCHIVED = 1, 2, 3, 4


async def _json(response: Any) -> Any:
    body = await response.json()
    return response.status, body


async def _promote(api: Caller, version_id: int, **headers: str) -> int:
    response = await api.patch(
        f"/modelversion/{version_id}", json={"stage_id": PRODUCTION}, headers=headers
    )
    await response.read()
    return response.status


async def _events(api: Caller, model_id: int) -> list[dict[str, Any]]:
    status, page = await _json(await api.get(f"/model/{model_id}/history?limit=200"))
    assert status == 200, page
    return list(page["data"])


async def _version(api: Caller, version_id: int) -> dict[str, Any]:
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


@contextlib.asynccontextmanager
async def _served(
    store: EmbeddedStore, mode: str, middlewares: Sequence[Any] = ()
) -> AsyncIterator[Caller]:
    """The app in ``mode`` on a fresh database of ``store``, dropped after."""
    settings = Settings(mongo_uri=store.uri, db_name=f"it_features_{uuid.uuid4().hex}")
    mongo = open_client(store.uri, timeout_ms=5000)
    try:
        async with serve_as(mode, settings, mongo, middlewares) as caller:
            yield caller
    finally:
        await mongo.drop_database(settings.db_name)
        mongo.close()


@pytest.fixture(params=MODES)
async def real(
    request: pytest.FixtureRequest, secantus: EmbeddedStore
) -> AsyncIterator[Caller]:
    """The app on SecantusDB, with transactions; auth off, then on."""
    async with _served(secantus, request.param) as caller:
        yield caller


@pytest.fixture(params=MODES)
async def standalone(
    request: pytest.FixtureRequest, secantus_standalone: EmbeddedStore
) -> AsyncIterator[Caller]:
    """The app on a SecantusDB server without transactions."""
    async with _served(secantus_standalone, request.param) as caller:
        yield caller


async def _database(api: Caller) -> Any:
    app = api.api.app
    return app[keys.MONGO_CLIENT][app[keys.SETTINGS].db_name]


# History ---------------------------------------------------------------


async def test_promotion_over_an_incumbent_writes_two_linked_events(
    real: Caller,
) -> None:
    ids = await lineage(real)
    incumbent = await register(real, ids["model_id"], ids["iteration_id"])
    challenger = await register(real, ids["model_id"], ids["iteration_id"])
    await _promote(real, incumbent)
    before = len(await _events(real, ids["model_id"]))

    assert await _promote(real, challenger) == 200

    events = (await _events(real, ids["model_id"]))[before:]
    archived, promoted = events  # exactly two
    assert (archived["modelversion_id"], archived["from_stage_id"]) == (
        incumbent,
        PRODUCTION,
    )
    assert archived["to_stage_id"] == ARCHIVED
    assert (promoted["modelversion_id"], promoted["to_stage_id"]) == (
        challenger,
        PRODUCTION,
    )
    assert (promoted["requested"], promoted["caused_by"]) == (True, None)
    assert (archived["requested"], archived["caused_by"]) == (False, promoted["id"])
    assert archived["at"] == promoted["at"]
    assert archived["user_id"] == promoted["user_id"]
    assert (await _version(real, incumbent))["stage_id"] == ARCHIVED


async def test_failure_inside_the_transaction_leaves_neither_change_nor_events(
    real: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await lineage(real)
    incumbent = await register(real, ids["model_id"], ids["iteration_id"])
    challenger = await register(real, ids["model_id"], ids["iteration_id"])
    await _promote(real, incumbent)
    before = (
        await _events(real, ids["model_id"]),
        await _version(real, incumbent),
        await _version(real, challenger),
    )
    record = History.record_requests

    async def record_then_fail(self: History, *args: Any, **kwargs: Any) -> None:
        await record(self, *args, **kwargs)
        raise RuntimeError("injected after the events were written")

    monkeypatch.setattr(History, "record_requests", record_then_fail)
    status = await _promote(real, challenger)
    monkeypatch.undo()

    assert status == 500
    after = (
        await _events(real, ids["model_id"]),
        await _version(real, incumbent),
        await _version(real, challenger),
    )
    assert after == before


async def test_failed_registration_leaves_no_version_event_or_number(
    real: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await lineage(real)
    await register(real, ids["model_id"], ids["iteration_id"])
    record = History.record_requests

    async def record_then_fail(self: History, *args: Any, **kwargs: Any) -> None:
        await record(self, *args, **kwargs)
        raise RuntimeError("injected after the event was written")

    monkeypatch.setattr(History, "record_requests", record_then_fail)
    response = await real.post(
        f"/modelversion/model/{ids['model_id']}",
        json={"iteration_id": ids["iteration_id"]},
    )
    monkeypatch.undo()
    after = await register(real, ids["model_id"], ids["iteration_id"])

    assert response.status == 500
    events = await _events(real, ids["model_id"])
    assert [(e["kind"], e["version"]) for e in events] == [
        ("REGISTERED", 1),
        ("REGISTERED", 2),
    ]
    assert (await _version(real, after))["version"] == 2


async def test_racing_promotions_never_show_two_versions_in_production(
    real: Caller,
) -> None:
    ids = await lineage(real)
    versions = [
        await register(real, ids["model_id"], ids["iteration_id"]) for _ in range(8)
    ]

    for _ in range(4):
        statuses = await asyncio.gather(*(_promote(real, v) for v in versions))
        assert statuses == [200] * 8

    events = await _events(real, ids["model_id"])
    assert _most_in_production(events) == 1
    by_id = {event["id"]: event for event in events}
    for event in events:
        if not event["requested"]:
            cause = by_id[event["caused_by"]]
            assert (cause["to_stage_id"], cause["at"]) == (PRODUCTION, event["at"])
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    status, now = await _json(await real.get(f"/model/{ids['model_id']}/production"))
    assert status == 200 and now["id"] == events[-1]["modelversion_id"]
    for moment, expected in _production_by_moment(events).items():
        path = f"/model/{ids['model_id']}/production?at={moment}"
        status, then = await _json(await real.get(path))
        assert (status, then.get("id")) == (200, expected), moment


def _production_by_moment(events: list[dict[str, Any]]) -> dict[str, int]:
    """The one version in PRODUCTION after each moment of ``events``
    (replayed in order), for the moments after which there is one."""
    stages: dict[int, Any] = {}
    after: dict[str, int | None] = {}
    for event in events:
        stages[event["modelversion_id"]] = event["to_stage_id"]
        serving = [v for v, stage in stages.items() if stage == PRODUCTION]
        assert len(serving) <= 1, (event, serving)
        after[event["at"]] = serving[0] if serving else None
    return {moment: v for moment, v in after.items() if v is not None}


async def test_production_at_each_moment_matches_the_history(
    real: Caller,
) -> None:
    ids = await lineage(real)
    versions = [
        await register(real, ids["model_id"], ids["iteration_id"]) for _ in range(3)
    ]
    for version_id in [*versions, versions[0]]:
        await asyncio.sleep(0.003)
        await _promote(real, version_id)
    events = await _events(real, ids["model_id"])
    promotions = [e for e in events if e["to_stage_id"] == PRODUCTION]

    for event in promotions:
        path = f"/model/{ids['model_id']}/production?at={event['at']}"
        status, version = await _json(await real.get(path))
        assert status == 200, version
        assert version["id"] == event["modelversion_id"]


# If-Match ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["model", "modelversion"])
async def test_concurrent_patches_with_one_etag_one_wins(
    real: Caller, kind: str
) -> None:
    await _race_patches(real, kind)


@pytest.mark.parametrize("kind", ["model", "modelversion"])
async def test_concurrent_patches_with_one_etag_one_wins_without_transactions(
    standalone: Caller, kind: str
) -> None:
    # Without a transaction to serialize them, only the compare-and-set in
    # the write itself can refuse the second.
    await _race_patches(standalone, kind)


async def _race_patches(api: Caller, kind: str) -> None:
    """Two PATCHes with one ETag, five times: one 200 and one 412 each."""
    ids = await lineage(api)
    ids["modelversion_id"] = await register(api, ids["model_id"], ids["iteration_id"])
    path = f"/{kind}/{ids[f'{kind}_id']}"

    for round_ in range(5):
        etag = (await api.get(path)).headers["ETag"]

        async def patch(text: str, etag: str = etag) -> int:
            response = await api.patch(
                path, json={"description": text}, headers={"If-Match": etag}
            )
            await response.read()
            return response.status

        statuses = await asyncio.gather(patch(f"a{round_}"), patch(f"b{round_}"))

        assert sorted(statuses) == [200, 412], (round_, statuses)
    status, body = await _json(await api.get(path))
    assert (status, body["revision"]) == (200, 6)


async def test_auto_archived_version_refuses_the_etag_read_before(
    real: Caller,
) -> None:
    ids = await lineage(real)
    incumbent = await register(real, ids["model_id"], ids["iteration_id"])
    challenger = await register(real, ids["model_id"], ids["iteration_id"])
    await _promote(real, incumbent)
    read_before = (await real.get(f"/modelversion/{incumbent}")).headers["ETag"]
    await _promote(real, challenger)

    status = await _promote(real, incumbent, **{"If-Match": read_before})

    assert status == 412
    assert (await _version(real, challenger))["stage_id"] == PRODUCTION


# Idempotency keys ------------------------------------------------------------


async def test_twenty_concurrent_registrations_with_one_key_make_one_version(
    real: Caller,
) -> None:
    ids = await lineage(real)
    path = f"/modelversion/model/{ids['model_id']}"
    body = {"iteration_id": ids["iteration_id"]}

    async def send() -> tuple[int, Any, str | None]:
        response = await real.post(path, json=body, headers={KEY: "register-once"})
        status, answer = await _json(response)
        return status, answer, response.headers.get("Retry-After")

    answers = await asyncio.gather(*(send() for _ in range(20)))
    retried = await send()

    created = [body for status, body, _ in answers if status == 201]
    busy = [(body["code"], wait) for status, body, wait in answers if status == 409]
    assert len(created) + len(busy) == 20 and created, answers
    assert set(busy) <= {("IDEMPOTENCY_KEY_IN_FLIGHT", "1")}, busy
    assert all(body == created[0] for body in created)
    assert retried[:2] == (201, created[0])
    _, page = await _json(await real.get(path))
    assert [v["version"] for v in page["data"]] == [1]
    events = await _events(real, ids["model_id"])
    assert [event["kind"] for event in events] == ["REGISTERED"]


async def test_one_key_from_two_users_at_once_makes_two_versions(
    secantus: EmbeddedStore,
) -> None:
    async with _served(secantus, AUTH_ON) as alice:
        assert isinstance(alice, Member)
        bob = await member_of(alice.api, alice.admin, "bob")
        ids = await lineage(alice)
        await grant(alice.admin, int(bob.user_id or 0), ids["project_id"], "rc")
        path = f"/modelversion/model/{ids['model_id']}"
        body = {"iteration_id": ids["iteration_id"]}

        async def send(member: Caller) -> tuple[int, Any]:
            return await _json(
                await member.post(path, json=body, headers={KEY: "shared"})
            )

        answers = await asyncio.gather(*(send(m) for m in (alice, bob) * 3))

        by_user: dict[int, set[int]] = {}
        for member, (status, answer) in zip((alice, bob) * 3, answers, strict=True):
            assert status in (201, 409), answer
            if status == 201:
                ids_seen = by_user.setdefault(int(member.user_id or 0), set())
                ids_seen.add(answer["modelversion_id"])
        assert sorted(len(seen) for seen in by_user.values()) == [1, 1]
        _, page = await _json(await alice.get(path))
        assert [v["version"] for v in page["data"]] == [1, 2]


async def test_keys_expire_through_the_ttl_index_on_the_database(
    real: Caller,
) -> None:
    db = await _database(real)

    indexes = await db.idempotency_keys.index_information()

    assert indexes["expires_ttl"]["key"] == [("expires_at", 1)]
    assert indexes["expires_ttl"]["expireAfterSeconds"] == 0


async def test_an_answer_that_cannot_be_stored_undoes_the_change(
    real: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    project_id = await make_project(real)
    path = f"/model/project/{project_id}"
    complete = IdempotencyLedger.complete

    async def complete_then_fail(
        self: IdempotencyLedger, *args: Any, **kw: Any
    ) -> bool:
        await complete(self, *args, **kw)
        raise RuntimeError("injected after the answer was stored")

    monkeypatch.setattr(IdempotencyLedger, "complete", complete_then_fail)
    response = await real.post(path, json={"name": "clf"}, headers={KEY: "k"})
    monkeypatch.undo()

    assert response.status == 500
    _, page = await _json(await real.get(path))
    assert page["data"] == []
    db = await _database(real)
    assert await db.idempotency_keys.count_documents({}) == 0


@pytest.fixture(params=MODES)
async def dropping(
    request: pytest.FixtureRequest, secantus: EmbeddedStore
) -> AsyncIterator[Caller]:
    """The app on SecantusDB, dropping the connection after the first keyed
    write has committed, its answer unsent."""
    dropped: list[bool] = []

    @web.middleware
    async def drop_first_answer(request: web.Request, handler: Any) -> Any:
        response = await handler(request)
        if KEY in request.headers and not dropped:
            dropped.append(True)
            assert request.transport is not None
            request.transport.close()
        return response

    async with _served(secantus, request.param, [drop_first_answer]) as caller:
        yield caller
    assert dropped == [True]


async def test_retry_after_the_connection_dropped_after_commit_replays(
    dropping: Caller,
) -> None:
    ids = await lineage(dropping)

    async with connect(url_of(dropping), token=dropping.token) as client:
        version_id = await client.create_modelversion(
            ids["model_id"], ids["iteration_id"]
        )
        versions = await client.get_modelversions(ids["model_id"])

    assert [v.id for v in versions] == [version_id]


# Without transactions --------------------------------------------------------


async def test_every_feature_works_without_transactions(
    standalone: Caller,
) -> None:
    api = standalone
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


async def test_promotions_sharing_a_transaction_replay_one_after_another(
    real: Caller,
) -> None:
    # Stage changes of one model that arrive together share a transaction
    # on a server with transactions, as if each ran after the one before.
    ids = await lineage(real)
    versions = [
        await register(real, ids["model_id"], ids["iteration_id"]) for _ in range(6)
    ]
    await _promote(real, versions[0])
    before = len(await _events(real, ids["model_id"]))

    statuses = await asyncio.gather(*(_promote(real, v) for v in versions[1:]))

    assert statuses == [200] * 5
    events = await _events(real, ids["model_id"])
    added = events[before:]
    assert _most_in_production(events) == 1
    assert [(e["requested"], e["to_stage_id"]) for e in added] == [
        (False, ARCHIVED),
        (True, PRODUCTION),
    ] * 5
    for archived, cause in zip(added[::2], added[1::2], strict=True):
        assert archived["caused_by"] == cause["id"]
    for v in versions:
        version = await _version(real, v)
        moved = [e for e in events if e["modelversion_id"] == v][1:]
        assert version["revision"] == 1 + len(moved)
    assert (await _version(real, added[-1]["modelversion_id"]))["stage_id"] == (
        PRODUCTION
    )


async def test_an_edit_between_a_shared_transactions_read_and_write_is_kept(
    real_api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The versions of a batch are written one write per move, each finding
    # them at the stage they were read at; an edit of another field that
    # lands in between neither gets lost nor loses the batch's changes.
    real = Caller(real_api, None)
    ids = await lineage(real)
    versions = [
        await register(real, ids["model_id"], ids["iteration_id"]) for _ in range(3)
    ]
    await _promote(real, versions[0])
    edits = _edit_inside_the_next_batch(real_api, monkeypatch, versions[1])

    statuses = await asyncio.gather(*(_promote(real, v) for v in versions[1:]))

    assert statuses == [200, 200] and edits
    events = await _events(real, ids["model_id"])
    assert _most_in_production(events) == 1
    edited = await _version(real, versions[1])
    moved = [e for e in events if e["modelversion_id"] == versions[1]][1:]
    assert edited["description"] == "edited"
    assert edited["revision"] == 1 + len(moved) + 1
    assert edited["stage_id"] == ARCHIVED
    assert (await _version(real, versions[2]))["stage_id"] == PRODUCTION


async def test_stage_changes_of_versions_not_read_here_yet_share_a_transaction(
    real_api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a worker that another handed the changes to, or one started
    # since the versions were registered: their model is read first, and
    # the changes take the model's turn together.
    real = Caller(real_api, None)
    ids = await lineage(real)
    versions = [
        await register(real, ids["model_id"], ids["iteration_id"]) for _ in range(5)
    ]
    service = real_api.app[keys.SERVICES].modelversions
    service._model_of.clear()
    batched: list[int] = []
    change_stages = service._change_stages

    async def counted(model_id: int, batch: list[Any]) -> list[Any]:
        batched.extend(change.version_id for change in batch)
        return await change_stages(model_id, batch)

    monkeypatch.setattr(service, "_change_stages", counted)

    statuses = await asyncio.gather(*(_promote(real, v) for v in versions))

    assert statuses == [200] * 5
    assert sorted(batched) == sorted(versions)
    assert _most_in_production(await _events(real, ids["model_id"])) == 1


async def test_if_match_in_a_shared_transaction_sees_the_change_before_it(
    real: Caller,
) -> None:
    ids = await lineage(real)
    version = await register(real, ids["model_id"], ids["iteration_id"])
    etag = (await real.get(f"/modelversion/{version}")).headers["ETag"]

    statuses = await asyncio.gather(
        *(_promote(real, version, **{"If-Match": etag}) for _ in range(3))
    )

    assert sorted(statuses) == [200, 412, 412]


async def test_creates_sharing_a_transaction_answer_each_name_on_its_own(
    real: Caller,
) -> None:
    # Creates in one project that arrive together share a transaction on a
    # server with transactions; a name taken in the database rolls the lot
    # back and each runs alone, a name taken within the batch is refused.
    project_id = await make_project(real, "creates")
    taken = await real.post(f"/model/project/{project_id}", json={"name": "taken"})
    assert taken.status == 201
    names = ["a", "b", "taken", "c", "b", "d"]

    responses = await asyncio.gather(
        *(real.post(f"/model/project/{project_id}", json={"name": n}) for n in names)
    )

    statuses = [r.status for r in responses]
    assert statuses[2] == 409
    assert sorted(statuses[:2] + statuses[3:]) == [201, 201, 201, 201, 409]
    assert 201 in (statuses[1], statuses[4]) and 409 in (statuses[1], statuses[4])
    status, page = await _json(await real.get(f"/model/project/{project_id}?limit=50"))
    assert status == 200
    assert sorted(m["name"] for m in page["data"]) == ["a", "b", "c", "d", "taken"]


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_a_version_id_past_64_bits_is_a_404_on_a_worker_of_several(
    secantus: EmbeddedStore, method: str
) -> None:
    # The driver cannot encode such an id: a worker that looks up the
    # version's model to find its owner must not ask the database for it.
    settings = Settings(mongo_uri=secantus.uri, db_name=f"it_{uuid.uuid4().hex}")
    with tempfile.TemporaryDirectory(prefix="dd-peers-") as directory:
        app = create_app(settings, peers=Peers(0, 2, Path(directory)))
        async with TestClient(TestServer(app)) as client:
            response = await client.request(
                method, "/modelversion/9223372036854775808", json={"stage_id": 3}
            )
            body = await response.json()

    assert response.status == 404
    assert body["code"] == "NOT_FOUND"


async def test_an_if_match_made_stale_between_a_batchs_read_and_write_is_a_412(
    real_api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batch checked If-Match against the version as it read it; an edit
    # that lands before the batch writes makes that check stale, so the
    # change must not be made on its strength.
    real = Caller(real_api, None)
    ids = await lineage(real)
    versions = [
        await register(real, ids["model_id"], ids["iteration_id"]) for _ in range(3)
    ]
    await _promote(real, versions[0])
    tag = (await real.get(f"/modelversion/{versions[1]}")).headers["ETag"]
    edits = _edit_inside_the_next_batch(real_api, monkeypatch, versions[1])

    statuses = await asyncio.gather(
        _promote(real, versions[1], **{"If-Match": tag}), _promote(real, versions[2])
    )

    assert edits
    assert statuses == [412, 200]
    edited = await _version(real, versions[1])
    assert edited["description"] == "edited"
    assert edited["stage_id"] != PRODUCTION
    assert (await _version(real, versions[2]))["stage_id"] == PRODUCTION


def _edit_inside_the_next_batch(
    real_api: TestClient, monkeypatch: pytest.MonkeyPatch, version_id: int
) -> list[int]:
    """Once, between a stage batch's reads and its writes, another writer
    edits the version's description; the list names it once it has."""
    services = real_api.app[keys.SERVICES]
    history = services.modelversions.events
    record = history.record_requests
    edits: list[int] = []

    async def edited_first(*args: Any, **kwargs: Any) -> None:
        if not edits:
            edits.append(version_id)
            await services.modelversions.store.collection("modelversions").update_one(
                {"_id": version_id},
                {"$set": {"description": "edited"}, "$inc": {"revision": 1}},
            )
        await record(*args, **kwargs)

    monkeypatch.setattr(history, "record_requests", edited_first)
    return edits
