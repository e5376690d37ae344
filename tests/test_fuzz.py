"""Property-based fuzzing of the running server from its own OpenAPI document.

Schemathesis generates requests for every operation the document
describes, valid ones and invalid ones, and sends them to the real app
(authentication on, the admin's token on every request) listening on a
loopback port, once on mongomock and once on a SecantusDB server (real
transactions, the real driver's errors). Every answer must be no 5xx,
have a documented status, media type and headers, and match the
documented schema. Generation is bounded (examples per operation, a fixed
seed) and so is each test's time, so that the run finds the same things
every time and cannot hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from mongomock_motor import AsyncMongoMockClient, enabled_gridfs_integration
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.embedded import EmbeddedStore
from app.server import create_app
from app.settings import Settings
from app.web.openapi import build
from app.web.routes import ROUTES
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, JWT_SECRET

EXAMPLES = 12
SEED = 6
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]
TIMEOUT_S = 10
BACKENDS = ["mongomock", pytest.param("secantusdb", marks=pytest.mark.integration)]

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class Served:
    """The running server's address and the admin's token."""

    url: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class _ServerThread:
    """The real app on ``backend``, served by its own event loop in a
    thread, since schemathesis sends its requests synchronously."""

    def __init__(self, settings: Settings, backend: str) -> None:
        self._settings = settings
        self._backend = backend
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._store: EmbeddedStore | None = None

    def start(self) -> str:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        return started.result(timeout=TIMEOUT_S)

    async def _start(self) -> str:
        if self._backend == "mongomock":
            app = create_app(self._settings, client=AsyncMongoMockClient())
        else:
            self._store = EmbeddedStore(":memory:")
            await self._store.start()
            uri = self._settings.model_copy(update={"mongo_uri": self._store.uri})
            app = create_app(uri)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        stopped = asyncio.run_coroutine_threadsafe(self._stop(), self._loop)
        stopped.result(timeout=TIMEOUT_S * 3)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=TIMEOUT_S)
        self._loop.close()

    async def _stop(self) -> None:
        try:
            if self._runner is not None:
                await self._runner.cleanup()
        finally:
            if self._store is not None:
                await self._store.stop()


def _settings() -> Settings:
    return Settings(
        # The default body limit, above the longest valid description.
        db_name="deardiary_fuzz",
        enable_auth=True,
        jwt_secret=JWT_SECRET,
        admin_username=ADMIN_USERNAME,
        admin_password=ADMIN_PASSWORD,
        bcrypt_rounds=4,
    )


def _seed(url: str) -> str:
    """Log in, and give id 1 of every kind of record something to name."""
    with requests.Session() as http:
        login = {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
        token = _json(http.post(f"{url}/auth", json=login, timeout=TIMEOUT_S))
        http.headers["Authorization"] = f"Bearer {token['access_token']}"

        def post(path: str, **kwargs: Any) -> int:
            answer = _json(http.post(url + path, timeout=TIMEOUT_S, **kwargs))
            return int(next(iter(answer.values())))

        project = post("/project", json={"name": "vision"})
        experiment = post(f"/experiment/project/{project}", json={"name": "e"})
        iteration = post(f"/iteration/experiment/{experiment}", json={})
        files = {"name": (None, "weights"), "file": ("w.bin", b"\0\1")}
        resource = post(f"/resource/experiment/{experiment}", files=files)
        model = post(f"/model/project/{project}", json={"name": "clf"})
        version = {"iteration_id": iteration, "resource_id": resource}
        version_id = post(f"/modelversion/model/{model}", json=version)
        promote = {"stage_id": 3}
        _json(http.patch(f"{url}/modelversion/{version_id}", json=promote))
        user = post("/user", json={"username": "ann", "password": "password-1"})
        flags = ("create", "read", "update", "delete")
        grant = {f"{flag}_permission": True for flag in flags}
        post(f"/userpermission/user/{user}/project/{project}", json=grant)
        return str(token["access_token"])


def _json(response: requests.Response) -> Any:
    assert response.status_code in (200, 201), response.text
    return response.json()


@pytest.fixture(scope="module", params=BACKENDS)
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    # mongomock's GridFS patch would stand in for the real one too.
    mock = request.param == "mongomock"
    with enabled_gridfs_integration() if mock else contextlib.nullcontext():
        server = _ServerThread(_settings(), request.param)
        try:
            url = server.start()
            yield Served(url, _seed(url))
        finally:
            server.stop()


# The document the server serves (test_openapi checks they are the same);
# schemathesis needs it before the server starts, to make one test of each
# operation.
schema = schemathesis.openapi.from_dict(
    build(ROUTES),
    config=SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {
                "mode": "all",
                "max-examples": EXAMPLES,
                # Unknown query parameters are ignored, as documented.
                "allow-extra-parameters": False,
            },
        }
    ),
)


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _fuzz(case: Any, served: Served) -> None:
    case.call_and_validate(
        base_url=served.url,
        headers=served.headers,
        checks=CHECKS,
        timeout=TIMEOUT_S,
    )


# Pytest runs tests in file order: the production lookup first, while the
# seeded version still is in production; deletes last, and the deletes of
# projects and users (which take everything under them) after all others,
# so the seeded records stay there for every other operation to find.
_PRODUCTION = "/production$"
_ROOTS = r"^/(project|user)/\{id\}$"


@schema.include(path_regex=_PRODUCTION).parametrize()
@FUZZ_SETTINGS
def test_production_lookup_answers_as_documented(case: Any, served: Served) -> None:
    _fuzz(case, served)


@schema.exclude(method="DELETE").exclude(path_regex=_PRODUCTION).parametrize()
@FUZZ_SETTINGS
def test_every_answer_is_documented_and_no_server_error(
    case: Any, served: Served
) -> None:
    _fuzz(case, served)


@schema.include(method="DELETE").exclude(path_regex=_ROOTS).parametrize()
@FUZZ_SETTINGS
def test_every_delete_answer_is_documented_and_no_server_error(
    case: Any, served: Served
) -> None:
    _fuzz(case, served)


@schema.include(method="DELETE", path_regex=_ROOTS).parametrize()
@FUZZ_SETTINGS
def test_deleting_projects_and_users_answers_as_documented(
    case: Any, served: Served
) -> None:
    _fuzz(case, served)
