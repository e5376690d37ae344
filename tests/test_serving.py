"""Serving a request: its id, its access line, its metrics, the readiness
probe and the request deadline, through the real app factory."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from app import keys
from app.logs import JsonFormatter, RequestIdFilter
from app.server import create_app
from app.settings import Settings
from app.web import middlewares
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, log_in
from tests.helpers import lineage, register


@pytest.fixture
def access_lines() -> Iterator[list[logging.LogRecord]]:
    """Every record of the access logger during the test."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("deardiary.access")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


async def _metrics(api: TestClient) -> dict[tuple[str, tuple[Any, ...]], float]:
    response = await api.get("/metrics")
    assert response.status == 200
    text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# Request ids ----------------------------------------------------------------


async def test_a_sane_request_id_is_echoed(api: TestClient) -> None:
    response = await api.get("/health", headers={"X-Request-ID": "job-7.step:2"})

    assert response.headers["X-Request-ID"] == "job-7.step:2"


async def test_an_error_answer_echoes_the_request_id_too(api: TestClient) -> None:
    response = await api.get("/model/999", headers={"X-Request-ID": "abc"})

    assert response.status == 404
    assert response.headers["X-Request-ID"] == "abc"


async def test_every_answer_gets_a_fresh_request_id_without_one(
    api: TestClient,
) -> None:
    first = await api.get("/no/such/path")
    second = await api.get("/health")

    ids = [first.headers["X-Request-ID"], second.headers["X-Request-ID"]]
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in ids)
    assert ids[0] != ids[1]


def test_fresh_request_ids_of_two_processes_never_meet() -> None:
    # A worker forked from another starts its own series of ids.
    parent = [middlewares.request_id(make_mocked_request("GET", "/")) for _ in "ab"]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.write(
            write, middlewares.request_id(make_mocked_request("GET", "/")).encode()
        )
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)

    assert parent[0] != parent[1]
    assert abs(int(child, 16) - int(parent[1], 16)) > 2**64 and len(child) == 32


@pytest.mark.parametrize(
    "given",
    ["x" * 65, "has space", "semi;colon", "new\tline", "Bearer.eyJ/abc=="],
)
async def test_an_odd_request_id_is_replaced_not_echoed(
    api: TestClient, given: str
) -> None:
    response = await api.get("/health", headers={"X-Request-ID": given})

    echoed = response.headers["X-Request-ID"]
    assert echoed != given and len(echoed) == 32


# Access lines ---------------------------------------------------------------


async def test_one_access_line_per_request_with_its_fields(
    api: TestClient, access_lines: list[logging.LogRecord]
) -> None:
    await api.get("/model/12345", headers={"X-Request-ID": "req-1"})

    [line] = access_lines
    assert line.levelno == logging.INFO
    assert vars(line)["method"] == "GET"
    assert vars(line)["route"] == "/model/{id}"
    assert vars(line)["status"] == 404
    assert vars(line)["latency_ms"] >= 0
    assert vars(line)["request_id"] == "req-1"
    assert line.getMessage().startswith("GET /model/{id} 404 ")


async def test_unknown_paths_are_logged_as_unmatched_not_by_path(
    api: TestClient, access_lines: list[logging.LogRecord]
) -> None:
    await api.get("/secret-path-123?token=abc")

    [line] = access_lines
    assert vars(line)["route"] == "unmatched"
    assert "secret-path-123" not in line.getMessage()
    assert "token" not in line.getMessage()


async def test_access_lines_carry_no_password_token_or_body(
    auth_api: TestClient, access_lines: list[logging.LogRecord]
) -> None:
    admin = await log_in(auth_api, ADMIN_USERNAME, ADMIN_PASSWORD)
    await admin.post("/project", json={"name": "body-marker-text"})

    texts = [f"{line.getMessage()} {vars(line)}" for line in access_lines]
    assert len(texts) == 2
    assert admin.token is not None
    for text in texts:
        assert ADMIN_PASSWORD not in text
        assert admin.token not in text
        assert "body-marker-text" not in text


async def test_json_format_writes_the_access_line_as_one_object(
    api: TestClient,
) -> None:
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("deardiary.access")
    logger.addHandler(handler)
    try:
        await api.get("/health", headers={"X-Request-ID": "json-1"})
    finally:
        logger.removeHandler(handler)

    [line] = sink.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["logger"] == "deardiary.access"
    assert {k: entry[k] for k in ("method", "route", "status", "request_id")} == {
        "method": "GET",
        "route": "/health",
        "status": 200,
        "request_id": "json-1",
    }
    assert isinstance(entry["latency_ms"], float)


async def test_lines_logged_during_a_request_carry_its_id(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(RequestIdFilter())
    services = api.app[keys.SERVICES]

    async def failing(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(services.models, "get", failing)
    logger = logging.getLogger("deardiary.http")
    logger.addHandler(handler)
    try:
        response = await api.get("/model/1", headers={"X-Request-ID": "oops-1"})
    finally:
        logger.removeHandler(handler)

    assert response.status == 500
    assert [vars(r).get("request_id") for r in records] == ["oops-1"]


# Metrics --------------------------------------------------------------------


async def test_metrics_count_requests_by_route_pattern_and_status(
    api: TestClient,
) -> None:
    key = (
        "deardiary_http_requests_total",
        (("method", "GET"), ("route", "/model/{id}"), ("status", "404")),
    )
    before = (await _metrics(api)).get(key, 0.0)

    await api.get("/model/1")
    await api.get("/model/2")

    after = await _metrics(api)
    assert after[key] - before == 2
    latency = (
        "deardiary_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/model/{id}")),
    )
    assert after[latency] >= 2


async def test_metrics_count_registrations_and_promotions(
    api: TestClient,
) -> None:
    ids = await lineage(api)
    registered = ("deardiary_registrations_total", ())
    promoted = ("deardiary_promotions_total", (("stage", "PRODUCTION"),))
    before = await _metrics(api)

    version = await register(api, ids["model_id"], ids["iteration_id"])
    response = await api.patch(f"/modelversion/{version}", json={"stage_id": 3})

    after = await _metrics(api)
    assert response.status == 200
    assert after[registered] - before[registered] == 1
    assert after[promoted] - before[promoted] == 1


async def test_metrics_name_every_series_under_the_prefix(api: TestClient) -> None:
    response = await api.get("/metrics")
    text = await response.text()

    names = {family.name for family in text_string_to_metric_families(text)}
    assert response.content_type == "text/plain"
    assert {
        "deardiary_http_requests",
        "deardiary_http_request_duration_seconds",
        "deardiary_mongo_command_duration_seconds",
        "deardiary_transaction_retries",
        "deardiary_promotions",
        "deardiary_registrations",
    } <= names


# Readiness and deadline -----------------------------------------------------


async def test_ready_when_the_database_answers_and_indexes_exist(
    api: TestClient,
) -> None:
    response = await api.get("/health/ready")

    assert response.status == 200
    assert await response.json() == {"status": "ready"}


async def test_not_ready_while_an_index_is_missing(
    settings: Settings, mongo: Any
) -> None:
    app = create_app(settings, client=mongo)
    async with TestClient(TestServer(app)) as api:
        await mongo[settings.db_name].models.drop_index("project_name_unique")

        response = await api.get("/health/ready")

        assert response.status == 503
        body = await response.json()
        assert body["code"] == "DATABASE_UNAVAILABLE"
        assert "models.project_name_unique" in body["message"]


async def test_not_ready_once_an_index_goes_missing_after_being_ready(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    ready = await api.get("/health/ready")
    await mongo[settings.db_name].modelversions.drop_index("one_production_per_model")

    response = await api.get("/health/ready")

    assert ready.status == 200
    assert response.status == 503
    body = await response.json()
    assert "modelversions.one_production_per_model" in body["message"]


async def test_not_ready_while_the_database_does_not_answer(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def silent() -> bool:
        return False

    monkeypatch.setattr(api.app[keys.SERVICES].store, "ping", silent)

    response = await api.get("/health/ready")

    assert response.status == 503
    assert (await response.json())["code"] == "DATABASE_UNAVAILABLE"


async def test_liveness_answers_without_the_database(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise AssertionError("the liveness probe touched the database")

    monkeypatch.setattr(api.app[keys.SERVICES].store, "ping", unreachable)
    monkeypatch.setattr(api.app[keys.SERVICES].store, "get", unreachable)

    response = await api.get("/health")

    assert response.status == 200


async def test_a_request_past_its_deadline_answers_503(
    settings: Settings, mongo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    quick = settings.model_copy(update={"request_timeout_seconds": 0.2})
    app = create_app(quick, client=mongo)
    async with TestClient(TestServer(app)) as api:

        async def hanging(*args: object, **kwargs: object) -> None:
            await asyncio.sleep(30)

        monkeypatch.setattr(app[keys.SERVICES].models, "get", hanging)

        response = await api.get("/model/1")

        assert response.status == 503
        assert await response.json() == {
            "code": "DATABASE_UNAVAILABLE",
            "message": "the database did not answer in time",
        }


async def test_a_slow_upload_is_not_cut_off_by_the_request_deadline(
    settings: Settings, mongo: Any
) -> None:
    quick = settings.model_copy(update={"request_timeout_seconds": 0.2})
    app = create_app(quick, client=mongo)
    async with TestClient(TestServer(app)) as api:
        ids = await lineage(api)
        boundary = "slow-upload"

        async def body() -> AsyncIterator[bytes]:
            yield (
                f"--{boundary}\r\n"
                'Content-Disposition: form-data; name="name"\r\n\r\nw\r\n'
                f"--{boundary}\r\n"
                'Content-Disposition: form-data; name="file"; filename="w"\r\n\r\n'
            ).encode()
            for _ in range(3):
                await asyncio.sleep(0.2)
                yield b"\x00" * 1024
            yield f"\r\n--{boundary}--\r\n".encode()

        response = await api.post(
            f"/resource/experiment/{ids['experiment_id']}",
            data=body(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )

        assert response.status == 201, await response.text()
