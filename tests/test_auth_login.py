"""Logging in: credentials, equal work for unknown users, the throttle, the
admin bootstrap and the settings the server refuses to start with."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import bcrypt
import pytest
from aiohttp.test_utils import TestClient, TestServer

from app import __main__ as entry
from app.server import create_app
from app.settings import ConfigError, Settings
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, JWT_SECRET, log_in

WRONG = "wrong-password-9"


async def attempt(api: TestClient, username: str, password: str) -> Any:
    response = await api.post(
        "/auth", json={"username": username, "password": password}
    )
    return response.status, await response.json(), response.headers


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, int]]:
    """Every bcrypt check: the hash's cost prefix and the thread it ran on."""
    seen: list[tuple[bytes, int]] = []
    checkpw = bcrypt.checkpw

    def recording(password: bytes, hashed: bytes) -> bool:
        seen.append((hashed[:7], threading.get_ident()))
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", recording)
    return seen


@pytest.fixture
def throttled(auth_settings: Settings) -> Settings:
    return auth_settings.model_copy(
        update={"login_max_failures": 3, "login_window_seconds": 600}
    )


@pytest.fixture
async def throttled_api(throttled: Settings, mongo: Any) -> Any:
    async with TestClient(TestServer(create_app(throttled, client=mongo))) as api:
        yield api


# Credentials -------------------------------------------------------------


async def test_unknown_user_and_wrong_password_get_the_same_answer(
    auth_api: TestClient, checks: list[tuple[bytes, int]]
) -> None:
    status_a, body_a, _ = await attempt(auth_api, "nobody", WRONG)
    status_b, body_b, _ = await attempt(auth_api, ADMIN_USERNAME, WRONG)

    assert (status_a, body_a) == (status_b, body_b)
    assert body_a["code"] == "INVALID_CREDENTIALS"
    assert status_a == 401


async def test_unknown_user_costs_one_bcrypt_check_like_a_known_one(
    auth_api: TestClient, checks: list[tuple[bytes, int]]
) -> None:
    await attempt(auth_api, "nobody", WRONG)
    unknown = list(checks)
    checks.clear()
    await attempt(auth_api, ADMIN_USERNAME, WRONG)

    assert len(unknown) == len(checks) == 1
    assert unknown[0][0] == checks[0][0] == b"$2b$04$"


async def test_bcrypt_runs_off_the_event_loop_thread(
    auth_api: TestClient, checks: list[tuple[bytes, int]]
) -> None:
    await attempt(auth_api, ADMIN_USERNAME, ADMIN_PASSWORD)

    assert checks
    assert all(thread != threading.get_ident() for _, thread in checks)


async def test_password_beyond_72_bytes_is_invalid_credentials(
    auth_api: TestClient, checks: list[tuple[bytes, int]]
) -> None:
    status, body, _ = await attempt(auth_api, ADMIN_USERNAME, ADMIN_PASSWORD * 8)

    assert (status, body["code"]) == (401, "INVALID_CREDENTIALS")
    assert len(checks) == 1


async def test_user_without_a_password_cannot_log_in(
    auth_api: TestClient, mongo: Any, auth_settings: Settings
) -> None:
    await mongo[auth_settings.db_name].users.insert_one(
        {"_id": 99, "username": "seeded", "is_admin": True, "created_date": 0}
    )

    status, body, _ = await attempt(auth_api, "seeded", "any-password")

    assert (status, body["code"]) == (401, "INVALID_CREDENTIALS")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"username": ADMIN_USERNAME}, 422, "INVALID_PAYLOAD"),
        ({"username": ADMIN_USERNAME, "password": 12345678}, 422, "INVALID_PAYLOAD"),
        ({"username": 1, "password": "x" * 8}, 422, "INVALID_PAYLOAD"),
        ({"username": "a", "password": "x" * 8, "extra": 1}, 422, "INVALID_PAYLOAD"),
        ([ADMIN_USERNAME, ADMIN_PASSWORD], 400, "INVALID_JSON"),
    ],
)
async def test_malformed_login_body_is_refused(
    auth_api: TestClient, body: Any, status: int, code: str
) -> None:
    response = await auth_api.post("/auth", json=body)

    assert (response.status, (await response.json())["code"]) == (status, code)


async def test_login_trims_the_username(auth_api: TestClient) -> None:
    status, body, _ = await attempt(auth_api, f" {ADMIN_USERNAME} ", ADMIN_PASSWORD)

    assert status == 200
    assert body["user"]["username"] == ADMIN_USERNAME


# The throttle ------------------------------------------------------------


async def test_repeated_failures_are_refused_with_retry_after(
    throttled_api: TestClient,
) -> None:
    failures = [(await attempt(throttled_api, ADMIN_USERNAME, WRONG))[0] for _ in "abc"]

    status, body, headers = await attempt(throttled_api, ADMIN_USERNAME, WRONG)

    assert failures == [401, 401, 401]
    assert (status, body["code"]) == (429, "TOO_MANY_REQUESTS")
    assert 1 <= int(headers["Retry-After"]) <= 600


async def test_throttled_username_is_refused_even_with_the_right_password(
    throttled_api: TestClient,
) -> None:
    for _ in range(3):
        await attempt(throttled_api, ADMIN_USERNAME, WRONG)

    status, body, _ = await attempt(throttled_api, ADMIN_USERNAME, ADMIN_PASSWORD)

    assert (status, body["code"]) == (429, "TOO_MANY_REQUESTS")


async def test_throttle_treats_unknown_usernames_alike(
    throttled_api: TestClient,
) -> None:
    for _ in range(3):
        await attempt(throttled_api, "nobody", WRONG)

    status, _, headers = await attempt(throttled_api, "nobody", WRONG)

    assert status == 429
    assert "Retry-After" in headers


async def test_throttle_counts_per_username(throttled_api: TestClient) -> None:
    for _ in range(3):
        await attempt(throttled_api, "nobody", WRONG)

    status, _, _ = await attempt(throttled_api, ADMIN_USERNAME, ADMIN_PASSWORD)

    assert status == 200


async def test_successful_login_clears_the_failures(
    throttled_api: TestClient,
) -> None:
    for _ in range(2):
        await attempt(throttled_api, ADMIN_USERNAME, WRONG)
    await attempt(throttled_api, ADMIN_USERNAME, ADMIN_PASSWORD)
    for _ in range(2):
        await attempt(throttled_api, ADMIN_USERNAME, WRONG)

    status, _, _ = await attempt(throttled_api, ADMIN_USERNAME, ADMIN_PASSWORD)

    assert status == 200


async def test_logins_open_again_when_the_window_has_passed(
    throttled_api: TestClient, mongo: Any, throttled: Settings
) -> None:
    for _ in range(3):
        await attempt(throttled_api, ADMIN_USERNAME, WRONG)
    past = datetime.now(UTC) - timedelta(seconds=1)
    await mongo[throttled.db_name].loginfailures.update_one(
        {"_id": ADMIN_USERNAME}, {"$set": {"expires_at": past}}
    )

    status, _, _ = await attempt(throttled_api, ADMIN_USERNAME, ADMIN_PASSWORD)

    assert status == 200


async def test_failure_after_the_window_starts_a_new_count(
    throttled_api: TestClient, mongo: Any, throttled: Settings
) -> None:
    for _ in range(3):
        await attempt(throttled_api, ADMIN_USERNAME, WRONG)
    past = datetime.now(UTC) - timedelta(seconds=1)
    failures = mongo[throttled.db_name].loginfailures
    await failures.update_one({"_id": ADMIN_USERNAME}, {"$set": {"expires_at": past}})

    status, _, _ = await attempt(throttled_api, ADMIN_USERNAME, WRONG)

    assert status == 401
    assert (await failures.find_one({"_id": ADMIN_USERNAME}))["failures"] == 1


# The admin bootstrap -----------------------------------------------------


async def start(settings: Settings, mongo: Any) -> None:
    """Start and stop a server, as a deployment's restart would."""
    server = TestServer(create_app(settings, client=mongo))
    try:
        await server.start_server()
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("missing", "variable"),
    [
        ("admin_username", "DEARDIARY_ADMIN_USERNAME"),
        ("admin_password", "DEARDIARY_ADMIN_PASSWORD"),
    ],
)
async def test_first_start_with_auth_and_no_admin_needs_the_credentials(
    auth_settings: Settings, mongo: Any, missing: str, variable: str
) -> None:
    settings = auth_settings.model_copy(update={missing: None})

    with pytest.raises(ConfigError) as refused:
        await start(settings, mongo)

    assert refused.value.variable == variable


async def test_later_start_needs_no_credentials_once_an_admin_can_log_in(
    auth_settings: Settings, mongo: Any
) -> None:
    await start(auth_settings, mongo)
    settings = auth_settings.model_copy(
        update={"admin_username": None, "admin_password": None}
    )

    app = create_app(settings, client=mongo)
    async with TestClient(TestServer(app)) as api:
        caller = await log_in(api, ADMIN_USERNAME, ADMIN_PASSWORD)

    assert caller.token


async def test_bootstrap_gives_a_password_to_the_admin_seeded_with_auth_off(
    settings: Settings, auth_settings: Settings, mongo: Any
) -> None:
    await start(settings.model_copy(update={"admin_username": ADMIN_USERNAME}), mongo)

    app = create_app(auth_settings, client=mongo)
    async with TestClient(TestServer(app)) as api:
        caller = await log_in(api, ADMIN_USERNAME, ADMIN_PASSWORD)
        users = await (await caller.get("/user")).json()

    assert users["total"] == 1
    assert users["data"][0]["is_admin"] is True


async def test_bootstrap_ignores_the_credentials_once_an_admin_exists(
    auth_settings: Settings, mongo: Any
) -> None:
    await start(auth_settings, mongo)
    other = auth_settings.model_copy(
        update={"admin_username": "second", "admin_password": "another-pass-1"}
    )

    await start(other, mongo)

    assert await mongo[auth_settings.db_name].users.count_documents({}) == 1


# Settings the server refuses ---------------------------------------------


@pytest.mark.parametrize(
    ("environment", "variable"),
    [
        ({"DEARDIARY_ENABLE_AUTH": "true"}, "DEARDIARY_JWT_SECRET"),
        (
            {"DEARDIARY_ENABLE_AUTH": "true", "DEARDIARY_JWT_SECRET": "x" * 31},
            "DEARDIARY_JWT_SECRET",
        ),
        (
            {
                "DEARDIARY_ENABLE_AUTH": "true",
                "DEARDIARY_JWT_SECRET": JWT_SECRET,
                "DEARDIARY_ADMIN_PASSWORD": "short",
            },
            "DEARDIARY_ADMIN_PASSWORD",
        ),
        (
            {
                "DEARDIARY_ENABLE_AUTH": "true",
                "DEARDIARY_JWT_SECRET": JWT_SECRET,
                "DEARDIARY_ADMIN_PASSWORD": "p" * 73,
            },
            "DEARDIARY_ADMIN_PASSWORD",
        ),
        ({"DEARDIARY_HOST": "0.0.0.0"}, "DEARDIARY_HOST"),
        ({"DEARDIARY_TOKEN_TTL_SECONDS": "0"}, "DEARDIARY_TOKEN_TTL_SECONDS"),
        ({"DEARDIARY_BCRYPT_ROUNDS": "3"}, "DEARDIARY_BCRYPT_ROUNDS"),
    ],
)
def test_server_refuses_to_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    environment: dict[str, str],
    variable: str,
) -> None:
    for key in [key for key in os.environ if key.startswith("DEARDIARY_")]:
        monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(entry, "serve", _must_not_serve)

    code = entry.main()

    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1
    assert variable in lines[0]
    for value in environment.values():
        if len(value) > 8:
            assert value not in lines[0]


def _must_not_serve(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("the server started despite the settings")


def test_open_network_without_auth_is_allowed_when_said_explicitly() -> None:
    settings = Settings(host="0.0.0.0", allow_insecure_network=True)

    entry._check_exposure(settings)

    assert not settings.loopback_only


def test_app_factory_refuses_auth_with_a_short_secret(settings: Settings) -> None:
    short = settings.model_copy(update={"enable_auth": True, "jwt_secret": "s" * 31})

    with pytest.raises(ConfigError) as refused:
        create_app(short)

    assert refused.value.variable == "DEARDIARY_JWT_SECRET"
