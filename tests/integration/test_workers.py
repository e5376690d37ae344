"""Worker processes: how many, one port, shared metrics, JSON logs, and
what happens on SIGTERM, on a worker's death and on the server's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.serving import Server, Servers, fetch, gone, wait_output

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    async with Servers(tmp_path) as started:
        yield started


async def _created(http: aiohttp.ClientSession, url: str, body: object) -> int:
    status, payload = await fetch(http, "POST", url, json=body)
    assert status == 201, payload
    return int(next(iter(payload.values())))


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def _health_count(http: aiohttp.ClientSession, server: Server) -> float:
    async with http.get(f"{server.url}/metrics") as response:
        text = await response.text()
    key = (("method", "GET"), ("route", "/health"), ("status", "200"))
    return _samples(text, "deardiary_http_requests_total").get(key, 0.0)


async def test_server_runs_as_many_workers_as_configured(servers: Servers) -> None:
    server = await servers.start(DEARDIARY_WORKERS="3")

    workers = server.workers()

    assert len(workers) == 3, server.output()
    assert len(server.stores()) == 1
    assert "(embedded store, 3 workers)" in server.output()


async def test_one_worker_serves_in_the_server_process(servers: Servers) -> None:
    server = await servers.start(DEARDIARY_WORKERS="1")

    async with aiohttp.ClientSession() as http:
        status, _ = await fetch(http, "GET", f"{server.url}/health/ready")

    assert status == 200
    assert server.workers() == []
    assert len(server.stores()) == 1


async def test_metrics_add_up_requests_of_every_worker(servers: Servers) -> None:
    server = await servers.start(DEARDIARY_WORKERS="2")
    # A connection per request, so the requests spread over the workers.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        before = await _health_count(http, server)

        for _ in range(20):
            async with http.get(f"{server.url}/health") as response:
                assert response.status == 200

        after = await _health_count(http, server)

    assert after - before == 20


async def test_metrics_name_every_series(servers: Servers) -> None:
    server = await servers.start(DEARDIARY_WORKERS="2")
    async with aiohttp.ClientSession() as http:
        project = await _created(http, f"{server.url}/project", {"name": "p"})
        experiment = await _created(
            http, f"{server.url}/experiment/project/{project}", {"name": "e"}
        )
        iteration = await _created(
            http, f"{server.url}/iteration/experiment/{experiment}", {}
        )
        model = await _created(
            http, f"{server.url}/model/project/{project}", {"name": "m"}
        )
        version = await _created(
            http,
            f"{server.url}/modelversion/model/{model}",
            {"iteration_id": iteration},
        )
        status, _ = await fetch(
            http, "PATCH", f"{server.url}/modelversion/{version}", json={"stage_id": 3}
        )
        assert status == 200

        async with http.get(f"{server.url}/metrics") as response:
            text = await response.text()

    assert _samples(text, "deardiary_registrations_total") == {(): 1.0}
    assert _samples(text, "deardiary_promotions_total") == {
        (("stage", "NO_STAGE"),): 0.0,
        (("stage", "STAGING"),): 0.0,
        (("stage", "PRODUCTION"),): 1.0,
        (("stage", "ARCHIVED"),): 0.0,
    }
    route = (("method", "PATCH"), ("route", "/modelversion/{id}"))
    assert _samples(text, "deardiary_http_request_duration_seconds_count")[route] == 1
    commands = _samples(text, "deardiary_mongo_command_duration_seconds_count")
    assert commands[(("command", "commitTransaction"), ("outcome", "ok"))] >= 2
    retries = _samples(text, "deardiary_transaction_retries_total")
    assert set(retries) == {(("cause", "conflict"),), (("cause", "transient"),)}


async def test_json_logs_are_one_object_per_line_with_access_fields(
    servers: Servers,
) -> None:
    server = await servers.start(DEARDIARY_WORKERS="2", DEARDIARY_LOG_FORMAT="json")
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{server.url}/model/4242", headers={"X-Request-ID": "trace-42"}
        ) as response:
            echoed = response.headers["X-Request-ID"]
            status = response.status
    server.process.send_signal(signal.SIGTERM)
    assert await server.wait_exit() == 0, server.output()

    lines = [json.loads(line) for line in server.output().splitlines() if line]

    assert (status, echoed) == (404, "trace-42")
    access = [line for line in lines if line.get("request_id") == "trace-42"]
    assert len(access) == 1, lines
    assert access[0]["logger"] == "deardiary.access"
    assert access[0]["method"] == "GET"
    assert access[0]["route"] == "/model/{id}"
    assert access[0]["status"] == 404
    assert isinstance(access[0]["latency_ms"], int | float)
    assert access[0]["pid"] != server.pid  # a worker's line


async def test_sigterm_lets_a_slow_upload_finish(
    servers: Servers, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = await servers.start(
        data_dir, DEARDIARY_WORKERS="2", DEARDIARY_SHUTDOWN_GRACE_SECONDS="30"
    )
    async with aiohttp.ClientSession() as http:
        project = await _created(http, f"{server.url}/project", {"name": "p"})
        experiment = await _created(
            http, f"{server.url}/experiment/project/{project}", {"name": "e"}
        )
        content = os.urandom(256 * 1024)
        halfway, resume = asyncio.Event(), asyncio.Event()
        upload = asyncio.create_task(
            _upload(http, f"{server.url}/resource/experiment/{experiment}",
                    content, halfway, resume)
        )  # fmt: skip
        await asyncio.wait_for(halfway.wait(), 30)

        server.process.send_signal(signal.SIGTERM)
        await _refuses_connections(server)
        resume.set()
        status, payload = await asyncio.wait_for(upload, 60)

    assert status == 201, payload
    assert await server.wait_exit() == 0, server.output()
    again = await servers.start(data_dir, DEARDIARY_WORKERS="1")
    async with aiohttp.ClientSession() as http:
        url = f"{again.url}/resource/{payload['resource_id']}/data"
        async with http.get(url) as response:
            assert await response.read() == content


async def _upload(
    http: aiohttp.ClientSession,
    url: str,
    content: bytes,
    halfway: asyncio.Event,
    resume: asyncio.Event,
) -> tuple[int, dict[str, int]]:
    """POST a multipart upload that stalls halfway until told to go on."""
    boundary = "deardiary-test-boundary"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="name"\r\n\r\nweights\r\n'
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="w.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    middle = len(content) // 2

    async def body() -> AsyncIterator[bytes]:
        yield head + content[:middle]
        halfway.set()
        await resume.wait()
        yield content[middle:] + tail

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    async with http.post(url, data=body(), headers=headers) as response:
        return response.status, await response.json()


async def _refuses_connections(server: Server) -> None:
    """Wait, bounded, until nobody accepts on the server's port any more."""
    for _ in range(300):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        except OSError:
            return
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        await asyncio.sleep(0.1)
    raise AssertionError(f"the server still accepts:\n{server.output()}")


async def test_a_worker_that_dies_stops_the_server_with_code_1(
    servers: Servers,
) -> None:
    server = await servers.start(DEARDIARY_WORKERS="2")
    first, second = server.workers()
    [store] = server.stores()

    os.kill(first, signal.SIGKILL)

    assert await server.wait_exit() == 1, server.output()
    assert await gone(second) and await gone(store)
    assert f"worker {first} exited unexpectedly" in server.output()


async def test_killed_server_takes_its_workers_and_store_along(
    servers: Servers,
) -> None:
    server = await servers.start(DEARDIARY_WORKERS="2")
    family = [*server.workers(), *server.stores()]
    assert len(family) == 3

    server.process.kill()
    await server.process.wait()

    for pid in family:
        assert await gone(pid), f"process {pid} outlived the killed server"


async def test_a_taken_port_stops_the_server_with_one_line(
    servers: Servers, tmp_path: Path
) -> None:
    first = await servers.start(DEARDIARY_WORKERS="1")

    second = await servers.start(
        tmp_path / "other",
        wait=False,
        DEARDIARY_PORT=str(first.port),
        DEARDIARY_WORKERS="2",
    )

    assert await second.wait_exit() == 2
    assert second.output().splitlines() == [
        f"configuration error: DEARDIARY_PORT: cannot listen on "
        f"127.0.0.1:{first.port}: Address already in use"
    ]


async def test_a_second_server_on_the_same_data_dir_is_refused(
    servers: Servers, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = await servers.start(data_dir, DEARDIARY_WORKERS="2")

    second = await servers.start(data_dir, wait=False, DEARDIARY_WORKERS="1")

    assert await second.wait_exit() == 2
    assert second.output().splitlines() == [
        f"configuration error: DEARDIARY_DATA_DIR: {data_dir} is in use by "
        f"another server (pid {first.pid})"
    ]
    assert second.stores() == []
    async with aiohttp.ClientSession() as http:
        status, _ = await fetch(http, "GET", f"{first.url}/health/ready")
    assert status == 200


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_second_stop_signal_does_not_cut_the_shutdown_short(
    servers: Servers, workers: str
) -> None:
    server = await servers.start(
        DEARDIARY_WORKERS=workers, DEARDIARY_SHUTDOWN_GRACE_SECONDS="30"
    )
    async with aiohttp.ClientSession() as http:
        project = await _created(http, f"{server.url}/project", {"name": "p"})
        experiment = await _created(
            http, f"{server.url}/experiment/project/{project}", {"name": "e"}
        )
        content = os.urandom(64 * 1024)
        halfway, resume = asyncio.Event(), asyncio.Event()
        upload = asyncio.create_task(
            _upload(http, f"{server.url}/resource/experiment/{experiment}",
                    content, halfway, resume)
        )  # fmt: skip
        await asyncio.wait_for(halfway.wait(), 30)

        server.process.send_signal(signal.SIGTERM)
        await _refuses_connections(server)
        # An impatient operator: Ctrl-C, then another SIGTERM.
        server.process.send_signal(signal.SIGINT)
        server.process.send_signal(signal.SIGTERM)
        await wait_output(server, "already stopping: SIGTERM ignored")
        resume.set()
        status, payload = await asyncio.wait_for(upload, 60)

    assert status == 201, payload
    assert await server.wait_exit() == 0, server.output()
    assert "already stopping: SIGINT ignored" in server.output()
    assert "Traceback" not in server.output()


async def test_a_configuration_error_met_by_a_worker_exits_2(
    servers: Servers,
) -> None:
    # Auth on, a fresh store and no admin named: the first worker refuses.
    server = await servers.start(
        wait=False,
        DEARDIARY_WORKERS="2",
        DEARDIARY_ENABLE_AUTH="true",
        DEARDIARY_JWT_SECRET="s" * 40,
    )

    assert await server.wait_exit() == 2
    assert "configuration error: DEARDIARY_ADMIN_USERNAME: " in server.output()
    assert "Traceback" not in server.output()


async def test_a_models_writes_go_to_one_worker_and_never_conflict(
    servers: Servers,
) -> None:
    # Registrations and promotions of one model, each on a connection of
    # its own so that they spread over both workers, all reach the model's
    # owner: its batches take turns, and no transaction has to run again.
    server = await servers.start(DEARDIARY_WORKERS="2", DEARDIARY_LOG_FORMAT="json")
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        project = await _created(http, f"{server.url}/project", {"name": "p"})
        experiment = await _created(
            http, f"{server.url}/experiment/project/{project}", {"name": "e"}
        )
        iteration = await _created(
            http, f"{server.url}/iteration/experiment/{experiment}", {}
        )
        models = [
            await _created(http, f"{server.url}/model/project/{project}", {"name": n})
            for n in ("even", "odd")
        ]
        for model in models:
            registered = await asyncio.gather(
                *(
                    fetch(
                        http,
                        "POST",
                        f"{server.url}/modelversion/model/{model}",
                        json={"iteration_id": iteration},
                    )
                    for _ in range(12)
                )
            )
            assert [status for status, _ in registered] == [201] * 12
            versions = [body["modelversion_id"] for _, body in registered]
            for _ in range(3):
                promoted = await asyncio.gather(
                    *(
                        fetch(
                            http,
                            "PATCH",
                            f"{server.url}/modelversion/{v}",
                            json={"stage_id": 3},
                        )
                        for v in versions
                    )
                )
                assert [status for status, _ in promoted] == [200] * 12
            status, page = await fetch(
                http, "GET", f"{server.url}/modelversion/model/{model}?limit=50"
            )
            assert status == 200
            assert sorted(v["version"] for v in page["data"]) == list(range(1, 13))
            assert [v["stage_id"] for v in page["data"]].count(3) == 1

        async with http.get(f"{server.url}/metrics") as response:
            text = await response.text()

    retries = _samples(text, "deardiary_transaction_retries_total")
    assert set(retries.values()) == {0.0}, retries
    route = (("method", "PATCH"), ("route", "/modelversion/{id}"), ("status", "200"))
    assert _samples(text, "deardiary_http_requests_total")[route] == 72  # once each
    # A handed-over request has an access line in each worker, one id.
    pids: dict[str, set[int]] = {}
    for line in server.output().splitlines():
        entry = json.loads(line)
        if entry.get("route") in ("/modelversion/{id}", "/modelversion/model/{id}"):
            pids.setdefault(entry["request_id"], set()).add(entry["pid"])
    assert len(pids) == 2 * 12 + 3 * 2 * 12 + 2  # with the two pages
    assert any(len(found) == 2 for found in pids.values())
