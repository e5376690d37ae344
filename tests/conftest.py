"""Fixtures: the real application on mongomock-motor, driven over HTTP."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import bcrypt
import pytest
from aiohttp import ClientResponse
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


# The two ways the feature tests drive the app (see `tests.auth_modes`).
AUTH_MODES = ("auth off", "auth on")


@pytest.fixture(params=AUTH_MODES)
async def caller(
    request: pytest.FixtureRequest, settings: Settings, mongo: Any
) -> AsyncIterator[Caller]:
    """The app with authentication off, then on (see `tests.auth_modes`)."""
    # Imported here: tests.auth_modes builds on this module.
    from tests.auth_modes import serve_as

    async with serve_as(request.param, settings, mongo) as caller:
        yield caller


# Authentication on ---------------------------------------------------------
#
# `auth_api` is the app with authentication on; `admin` sends every request
# with the bootstrapped admin's token, and `make_user` creates users and
# returns a `Caller` that sends their token.

JWT_SECRET = "unit-tests-only-secret-of-forty-bytes-000"
ADMIN_USERNAME = "root"
ADMIN_PASSWORD = "root-password-1"
USER_PASSWORD = "user-password-1"


class Caller:
    """A client that sends every request with one user's bearer token."""

    def __init__(
        self, api: TestClient, token: str | None, user_id: int | None = None
    ) -> None:
        self.api = api
        self.token = token
        self.user_id = user_id

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.token is None else {"Authorization": f"Bearer {self.token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.api.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)


async def log_in(api: TestClient, username: str, password: str) -> Caller:
    """Log in over the API; the caller carries the token."""
    response = await api.post(
        "/auth", json={"username": username, "password": password}
    )
    body = await response.json()
    assert response.status == 200, body
    return Caller(api, body["access_token"], body["user"]["id"])


def with_auth(settings: Settings) -> Settings:
    """``settings`` with authentication on and a cheap bcrypt cost."""
    return settings.model_copy(
        update={
            "enable_auth": True,
            "jwt_secret": JWT_SECRET,
            "admin_username": ADMIN_USERNAME,
            "admin_password": ADMIN_PASSWORD,
            "bcrypt_rounds": 4,
        }
    )


@pytest.fixture
def auth_settings(settings: Settings) -> Settings:
    """The test settings with authentication on and a cheap bcrypt cost."""
    return with_auth(settings)


@pytest.fixture
async def auth_api(auth_settings: Settings, mongo: Any) -> AsyncIterator[TestClient]:
    """The real app factory with authentication on, on mongomock-motor."""
    app = create_app(auth_settings, client=mongo)
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.fixture
async def admin(auth_api: TestClient) -> Caller:
    """The bootstrapped admin, logged in."""
    return await log_in(auth_api, ADMIN_USERNAME, ADMIN_PASSWORD)


@pytest.fixture
def make_user(auth_api: TestClient, admin: Caller) -> Any:
    """Create a user, grant flags ("crud" letters) per project, log them in."""

    async def make(username: str, grants: dict[int, str] | None = None) -> Caller:
        response = await admin.post(
            "/user", json={"username": username, "password": USER_PASSWORD}
        )
        body = await response.json()
        assert response.status == 201, body
        for project_id, letters in (grants or {}).items():
            await grant(admin, body["user_id"], project_id, letters)
        return await log_in(auth_api, username, USER_PASSWORD)

    return make


async def grant(admin: Caller, user_id: int, project_id: int, letters: str) -> int:
    """Give a user the flags named by letters of "crud" on a project."""
    flags = {
        f"{name}_permission": name[0] in letters
        for name in ("create", "read", "update", "delete")
    }
    response = await admin.post(
        f"/userpermission/user/{user_id}/project/{project_id}", json=flags
    )
    body = await response.json()
    assert response.status == 201, body
    return int(body["userpermission_id"])


# No secret ever leaves the server ------------------------------------------
#
# Every test records the passwords and bcrypt hashes it makes or checks
# (through bcrypt itself), the passwords it sends, every response body it
# reads and every log record; at the end no body or log line may contain
# one of those secrets, and no log line may contain a token.

_SECRET_MIN_CHARS = 8
_TOKEN = re.compile(r'"access_token":\s*"([^"]+)"')


class SecretRecorder(logging.Handler):
    """Collects secrets, response bodies and log lines of one test."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.secrets: set[str] = set()
        self.bodies: list[str] = []
        self.logs: list[str] = []

    def secret(self, value: Any) -> None:
        if isinstance(value, bytes):
            try:
                value = value.decode()
            except UnicodeDecodeError:
                return
        if isinstance(value, str) and len(value) >= _SECRET_MIN_CHARS:
            self.secrets.add(value)

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.getMessage()} {vars(record)}"
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.logs.append(text)

    def leaks(self) -> list[str]:
        tokens = {token for body in self.bodies for token in _TOKEN.findall(body)}
        found = [
            f"secret in {where}"
            for secret in self.secrets
            for where, texts in (("a response", self.bodies), ("a log", self.logs))
            if any(secret in text for text in texts)
        ]
        found += ["token in a log" for t in tokens if any(t in x for x in self.logs)]
        return found


@pytest.fixture(autouse=True)
def no_secret_leaks(monkeypatch: pytest.MonkeyPatch) -> Iterator[SecretRecorder]:
    """Fail the test if a response or log line carries a password or hash."""
    recorder = SecretRecorder()
    _record_bcrypt(monkeypatch, recorder)
    _record_http(monkeypatch, recorder)

    loggers = [logging.getLogger(), logging.getLogger("deardiary")]
    levels = [logger.level for logger in loggers]
    loggers[0].addHandler(recorder)
    loggers[1].setLevel(logging.DEBUG)
    try:
        yield recorder
    finally:
        loggers[0].removeHandler(recorder)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    assert not recorder.leaks(), recorder.leaks()


def _record_bcrypt(monkeypatch: pytest.MonkeyPatch, recorder: SecretRecorder) -> None:
    hashpw, checkpw = bcrypt.hashpw, bcrypt.checkpw

    def recording_hashpw(password: bytes, salt: bytes) -> bytes:
        digest = hashpw(password, salt)
        recorder.secret(password)
        recorder.secret(digest)
        return digest

    def recording_checkpw(password: bytes, hashed: bytes) -> bool:
        recorder.secret(password)
        recorder.secret(hashed)
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "hashpw", recording_hashpw)
    monkeypatch.setattr(bcrypt, "checkpw", recording_checkpw)


def _record_http(monkeypatch: pytest.MonkeyPatch, recorder: SecretRecorder) -> None:
    read, request = ClientResponse.read, TestClient._request

    async def recording_read(self: ClientResponse) -> bytes:
        body = await read(self)
        recorder.bodies.append(body.decode("utf-8", "replace"))
        return body

    async def recording_request(
        self: TestClient, method: str, path: Any, **kwargs: Any
    ) -> ClientResponse:
        payload = kwargs.get("json")
        if isinstance(payload, dict):
            recorder.secret(payload.get("password"))
        return await request(self, method, path, **kwargs)

    monkeypatch.setattr(ClientResponse, "read", recording_read)
    monkeypatch.setattr(TestClient, "_request", recording_request)
