"""Handing a model's writes to the worker that owns the model: what is
handed over, what is answered here, and what a lost answer becomes."""

from __future__ import annotations

import asyncio
import gzip
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from app import keys
from app.server import create_app
from app.settings import Settings
from app.web.owners import Peers
from tests.helpers import lineage, register


class Owner:
    """A stand-in for worker 1: it notes what it was handed and answers."""

    def __init__(self, directory: Path) -> None:
        self.path = Peers(1, 2, directory).socket_path(1)
        self.seen: list[tuple[str, str, CIMultiDict[str], bytes]] = []
        self.kept_alive: list[bool] = []
        self.drop = False
        self.gzip = False
        self._runner: web.AppRunner | None = None

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            (request.method, request.path_qs, CIMultiDict(request.headers), body)
        )
        self.kept_alive.append(request.keep_alive)
        if self.drop:
            assert request.transport is not None
            request.transport.close()
        answer = web.json_response(
            {"modelversion_id": 77}, status=201, headers={"ETag": '"77-0"'}
        )
        if self.gzip:
            answer.body = gzip.compress(b'{"modelversion_id": 77}')
            answer.headers["Content-Encoding"] = "gzip"
        return answer

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.path)).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
def directory() -> Any:
    # A short path: a Unix socket's must fit in about a hundred bytes.
    with tempfile.TemporaryDirectory(prefix="dd-peers-") as found:
        yield Path(found)


@pytest.fixture
async def owner(directory: Path) -> AsyncIterator[Owner]:
    found = Owner(directory)
    await found.start()
    yield found
    await found.stop()


@pytest.fixture
async def worker0(
    settings: Settings, mongo: Any, directory: Path
) -> AsyncIterator[TestClient]:
    """Worker 0 of two, on the mock store."""
    app = create_app(settings, client=mongo, peers=Peers(0, 2, directory))
    async with TestClient(TestServer(app)) as client:
        yield client


def test_a_model_belongs_to_the_worker_its_id_names() -> None:
    peers = Peers(0, 3, Path("/run"))

    assert [peers.owner(model_id) for model_id in range(1, 7)] == [1, 2, 0, 1, 2, 0]


async def test_a_registration_of_anothers_model_is_its_answer(
    worker0: TestClient, owner: Owner
) -> None:
    response = await worker0.post(
        "/modelversion/model/1?x=1",
        json={"iteration_id": 5},
        headers={"Authorization": "Bearer t", "Idempotency-Key": "k1"},
    )

    assert response.status == 201
    assert await response.json() == {"modelversion_id": 77}
    assert response.headers["ETag"] == '"77-0"'
    [(method, path, headers, body)] = owner.seen
    assert (method, path, body) == (
        "POST",
        "/modelversion/model/1?x=1",
        b'{"iteration_id": 5}',
    )
    assert headers["Authorization"] == "Bearer t"
    assert headers["Idempotency-Key"] == "k1"
    assert headers["X-Request-ID"] == response.headers["X-Request-ID"]


async def test_a_registration_of_its_own_model_is_answered_here(
    worker0: TestClient, owner: Owner
) -> None:
    response = await worker0.post("/modelversion/model/2", json={"iteration_id": 5})

    assert response.status == 404
    assert (await response.json())["code"] == "NOT_FOUND"
    assert owner.seen == []


async def test_reads_are_never_handed_over(worker0: TestClient, owner: Owner) -> None:
    response = await worker0.get("/modelversion/model/1")

    assert response.status == 404
    assert owner.seen == []


async def test_an_owner_out_of_reach_leaves_the_answer_to_this_worker(
    worker0: TestClient, directory: Path
) -> None:
    # No worker 1 listens: this one answers, as if it owned the model.
    response = await worker0.post("/modelversion/model/1", json={"iteration_id": 5})

    assert response.status == 404
    assert (await response.json())["code"] == "NOT_FOUND"


async def test_an_answer_lost_after_the_handover_is_a_503(
    worker0: TestClient, owner: Owner
) -> None:
    owner.drop = True

    response = await worker0.post("/modelversion/model/1", json={"iteration_id": 5})

    assert response.status == 503
    body = await response.json()
    assert body["code"] == "DATABASE_UNAVAILABLE"
    assert "may or may not have been made" in body["message"]


@pytest.fixture
async def peer_socket(
    settings: Settings, mongo: Any, directory: Path
) -> AsyncIterator[tuple[web.Application, aiohttp.ClientSession]]:
    """Worker 0 as the other workers reach it: on its own Unix socket."""
    app = create_app(settings, client=mongo, peers=Peers(0, 2, directory))
    runner = web.AppRunner(app)
    await runner.setup()
    path = Peers(0, 2, directory).socket_path(0)
    await web.UnixSite(runner, str(path)).start()
    try:
        connector = aiohttp.UnixConnector(path=str(path))
        async with aiohttp.ClientSession(connector=connector) as http:
            yield app, http
    finally:
        await runner.cleanup()


async def test_a_handed_over_request_is_answered_where_it_arrives(
    peer_socket: tuple[web.Application, aiohttp.ClientSession], owner: Owner
) -> None:
    # Worker 0 receives, on its own socket for the others, a registration
    # of worker 1's model: it never hands it on again.
    _, http = peer_socket

    async with http.post(
        "http://worker0/modelversion/model/1", json={"iteration_id": 5}
    ) as response:
        status = response.status

    assert status == 404
    assert owner.seen == []


async def test_a_stage_change_goes_to_the_owner_of_the_versions_model(
    settings: Settings, mongo: Any, worker0: TestClient, owner: Owner
) -> None:
    # Set up by a lone worker on the same database: worker 0 learns the
    # version's model by reading it, then hands the change over.
    async with TestClient(TestServer(create_app(settings, client=mongo))) as alone:
        ids = await lineage(alone)
        version = await register(alone, ids["model_id"], ids["iteration_id"])
    assert Peers(0, 2, Path()).owner(ids["model_id"]) == 1

    response = await worker0.patch(f"/modelversion/{version}", json={"stage_id": 3})
    missing = await worker0.patch("/modelversion/999", json={"stage_id": 3})

    assert response.status == 201  # the stand-in's answer
    [(method, path, _, body)] = owner.seen
    assert (method, path, body) == (
        "PATCH",
        f"/modelversion/{version}",
        b'{"stage_id": 3}',
    )
    assert missing.status == 404


@pytest.mark.parametrize(
    "path",
    [
        "/modelversion/model/18446744073709551616",
        "/modelversion/model/" + "9" * 5000,
    ],
)
async def test_a_registration_under_an_id_that_names_nothing_is_a_404_here(
    worker0: TestClient, owner: Owner, path: str
) -> None:
    response = await worker0.post(path, json={"iteration_id": 5})

    assert response.status == 404
    assert (await response.json())["code"] == "NOT_FOUND"
    assert owner.seen == []


@pytest.mark.parametrize("digits", ["9223372036854775808", "9" * 5000])
async def test_a_change_of_a_version_whose_id_names_nothing_is_a_404_here(
    worker0: TestClient, owner: Owner, digits: str
) -> None:
    response = await worker0.patch(f"/modelversion/{digits}", json={"stage_id": 3})

    assert response.status == 404
    assert (await response.json())["code"] == "NOT_FOUND"
    assert owner.seen == []


async def test_the_owner_gets_one_request_id_and_every_repeated_header(
    worker0: TestClient, owner: Owner
) -> None:
    # However the client spells its id header, the owner sees this
    # request's one id, the same both access lines carry.
    headers = CIMultiDict(
        [("x-request-id", "a b"), ("If-Match", '"1-1"'), ("If-Match", '"1-2"')]
    )

    response = await worker0.post(
        "/modelversion/model/1", json={"iteration_id": 5}, headers=headers
    )

    [(_, _, seen, _)] = owner.seen
    assert seen.getall("X-Request-ID") == [response.headers["X-Request-ID"]]
    assert response.headers["X-Request-ID"] != "a b"
    assert seen.getall("If-Match") == ['"1-1"', '"1-2"']


async def test_an_owners_compressed_answer_reaches_the_client_as_sent(
    worker0: TestClient, owner: Owner
) -> None:
    owner.gzip = True

    response = await worker0.post("/modelversion/model/1", json={"iteration_id": 5})

    assert response.status == 201
    assert await response.json() == {"modelversion_id": 77}


async def test_each_handover_has_a_connection_of_its_own(
    worker0: TestClient, owner: Owner
) -> None:
    # A kept connection the owner closes as it stops would fail the next
    # write sent on it, which the owner never saw.
    for _ in range(2):
        await worker0.post("/modelversion/model/1", json={"iteration_id": 5})

    assert owner.kept_alive == [False, False]


async def test_the_owner_is_told_the_time_the_request_has_left(
    settings: Settings, worker0: TestClient, owner: Owner
) -> None:
    await worker0.post(
        "/modelversion/model/1",
        json={"iteration_id": 5},
        headers={"X-DearDiary-Time-Left": "9999"},
    )

    [(_, _, seen, _)] = owner.seen
    [left] = seen.getall("X-DearDiary-Time-Left")
    assert 0 < float(left) <= settings.request_timeout_seconds - 0.1


async def test_a_handed_over_request_has_only_the_time_its_sender_had_left(
    peer_socket: tuple[web.Application, aiohttp.ClientSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Worker 0 owns the change: it gives up when the sender would, and so
    # never makes a change after the sender answered 503.
    app, http = peer_socket
    monkeypatch.setattr(app[keys.SERVICES].modelversions, "update", _slow)

    async with http.patch(
        "http://worker0/modelversion/2",
        json={"stage_id": 3},
        headers={"X-DearDiary-Time-Left": "0.05"},
    ) as response:
        status, body = response.status, await response.json()

    assert status == 503
    assert body["code"] == "DATABASE_UNAVAILABLE"


async def test_a_clients_word_on_its_time_left_is_not_taken(
    worker0: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = worker0.app[keys.SERVICES]
    monkeypatch.setattr(services.modelversions, "update", _slow)

    response = await worker0.patch(
        "/modelversion/2",
        json={"stage_id": 3},
        headers={"X-DearDiary-Time-Left": "0.05"},
    )

    assert response.status == 200


async def _slow(*args: Any, **kwargs: Any) -> None:
    await asyncio.sleep(0.3)
