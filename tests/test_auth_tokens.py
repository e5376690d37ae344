"""Tokens: what a login returns, and every way a token is refused."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.server import create_app
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, JWT_SECRET, Caller, log_in


def token(user_id: Any, *, secret: str = JWT_SECRET, **changes: Any) -> str:
    """A token for ``user_id``, valid unless ``changes`` spoil it."""
    moment = datetime.now(UTC)
    claims = {"sub": str(user_id), "iat": moment, "exp": moment + timedelta(hours=1)}
    algorithm = changes.pop("algorithm", "HS256")
    claims.update(changes)
    claims = {key: value for key, value in claims.items() if value is not None}
    return jwt.encode(claims, secret, algorithm=algorithm)


def unsigned(user_id: int) -> str:
    """A token with ``alg: none`` and no signature."""

    def part(data: dict[str, Any]) -> str:
        raw = json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    expires = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
    header = part({"alg": "none", "typ": "JWT"})
    claims = part({"sub": str(user_id), "iat": expires - 3600, "exp": expires})
    return f"{header}.{claims}."


async def status_of(api: TestClient, path: str, authorization: str) -> tuple[int, Any]:
    response = await api.get(path, headers={"Authorization": authorization})
    return response.status, await response.json()


async def test_login_returns_a_bearer_token_with_its_expiry(
    auth_api: TestClient,
) -> None:
    response = await auth_api.post(
        "/auth", json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
    )
    body = await response.json()

    assert response.status == 200
    assert set(body) == {"access_token", "token_type", "expires_at", "user"}
    assert body["token_type"] == "Bearer"
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"])
    expires = datetime.fromtimestamp(claims["exp"], UTC)
    assert body["expires_at"] == expires.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert claims["exp"] - claims["iat"] == 24 * 3600
    assert body["user"]["username"] == ADMIN_USERNAME
    assert "password_hash" not in body["user"]


async def test_token_lifetime_follows_the_setting(
    auth_settings: Any, mongo: Any
) -> None:
    settings = auth_settings.model_copy(update={"token_ttl_seconds": 120})

    app = create_app(settings, client=mongo)
    async with TestClient(TestServer(app)) as api:
        caller = await log_in(api, ADMIN_USERNAME, ADMIN_PASSWORD)

    claims = jwt.decode(caller.token or "", JWT_SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 120


async def test_valid_token_acts_as_its_user(admin: Caller) -> None:
    response = await admin.get("/auth/me")

    body = await response.json()
    assert response.status == 200
    assert body["username"] == ADMIN_USERNAME
    assert body["is_admin"] is True


async def test_expired_token_is_token_expired(
    auth_api: TestClient, admin: Caller
) -> None:
    past = datetime.now(UTC) - timedelta(hours=2)
    expired = token(admin.user_id, iat=past, exp=past + timedelta(hours=1))

    status, body = await status_of(auth_api, "/auth/me", f"Bearer {expired}")

    assert (status, body["code"]) == (401, "TOKEN_EXPIRED")


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(
            {"secret": "a-different-secret-that-is-long-enough"}, id="signature"
        ),
        pytest.param(
            {"algorithm": "HS512"},
            id="hs512",
            # The test secret is short for HS512; the server never signs so.
            marks=pytest.mark.filterwarnings("ignore::UserWarning:jwt"),
        ),
        pytest.param({"exp": None}, id="no-expiry"),
        pytest.param({"iat": None}, id="no-issued-at"),
        pytest.param({"sub": None}, id="no-subject"),
        pytest.param({"sub": "root"}, id="subject-not-an-id"),
        pytest.param({"sub": str(2**64)}, id="subject-beyond-64-bits"),
        pytest.param({"sub": "-1"}, id="subject-negative"),
    ],
)
async def test_spoiled_token_is_token_invalid(
    auth_api: TestClient, admin: Caller, spoil: dict[str, Any]
) -> None:
    bad = token(admin.user_id, **spoil)

    status, body = await status_of(auth_api, "/auth/me", f"Bearer {bad}")

    assert (status, body["code"]) == (401, "TOKEN_INVALID")


async def test_unsigned_alg_none_token_is_token_invalid(
    auth_api: TestClient, admin: Caller
) -> None:
    status, body = await status_of(
        auth_api, "/auth/me", f"Bearer {unsigned(admin.user_id or 0)}"
    )

    assert (status, body["code"]) == (401, "TOKEN_INVALID")


@pytest.mark.parametrize(
    "header",
    [
        "Basic cm9vdDpyb290",
        "Bearer",
        "Bearer ",
        "Token abc",
        "Bearer a b",
        "abc",
        "Bearer not.a.jwt",
        "Bearer \u00e9\u00e9\u00e9",
    ],
)
async def test_malformed_authorization_header_is_token_invalid(
    auth_api: TestClient, header: str
) -> None:
    status, body = await status_of(auth_api, "/project", header)

    assert (status, body["code"]) == (401, "TOKEN_INVALID")


async def test_missing_authorization_header_is_token_missing(
    auth_api: TestClient,
) -> None:
    response = await auth_api.get("/project")

    body = await response.json()
    assert (response.status, body["code"]) == (401, "TOKEN_MISSING")


async def test_bearer_scheme_is_case_insensitive(admin: Caller) -> None:
    response = await admin.get(
        "/auth/me", headers={"Authorization": f"bearer {admin.token}"}
    )

    assert response.status == 200


async def test_token_of_a_deleted_user_is_token_invalid(
    admin: Caller, make_user: Any
) -> None:
    user = await make_user("leaving")
    await admin.delete(f"/user/{user.user_id}")

    response = await user.get("/auth/me")

    body = await response.json()
    assert (response.status, body["code"]) == (401, "TOKEN_INVALID")


async def test_refresh_returns_a_new_working_token(admin: Caller) -> None:
    response = await admin.post("/auth/refresh")
    body = await response.json()

    assert response.status == 200
    assert body["token_type"] == "Bearer"
    assert body["user"]["id"] == admin.user_id
    renewed = Caller(admin.api, body["access_token"])
    assert (await renewed.get("/auth/me")).status == 200


async def test_refresh_of_an_expired_token_is_token_expired(
    auth_api: TestClient, admin: Caller
) -> None:
    past = datetime.now(UTC) - timedelta(days=2)
    expired = token(admin.user_id, iat=past, exp=past + timedelta(days=1))

    response = await auth_api.post(
        "/auth/refresh", headers={"Authorization": f"Bearer {expired}"}
    )

    body = await response.json()
    assert (response.status, body["code"]) == (401, "TOKEN_EXPIRED")


async def test_refresh_without_a_token_is_token_missing(auth_api: TestClient) -> None:
    response = await auth_api.post("/auth/refresh")

    body = await response.json()
    assert (response.status, body["code"]) == (401, "TOKEN_MISSING")


async def test_unknown_path_answers_404_before_asking_for_a_token(
    auth_api: TestClient,
) -> None:
    response = await auth_api.get("/no/such/path")

    body = await response.json()
    assert (response.status, body["code"]) == (404, "NOT_FOUND")


async def test_with_auth_off_tokens_are_ignored_and_login_is_not_found(
    api: TestClient,
) -> None:
    me = await api.get("/auth/me", headers={"Authorization": "Bearer junk"})
    login = await api.post("/auth", json={"username": "admin", "password": "x" * 8})

    assert me.status == 200
    assert (await me.json())["is_admin"] is True
    assert (login.status, (await login.json())["code"]) == (404, "NOT_FOUND")


async def test_authorization_header_with_bytes_that_are_not_utf8_is_token_invalid(
    auth_api: TestClient,
) -> None:
    host, port = auth_api.server.host, auth_api.server.port
    assert host is not None and port is not None
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"GET /project HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"Authorization: Bearer a\xff.b.c\r\n\r\n"
    )

    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 "), head
    assert json.loads(body)["code"] == "TOKEN_INVALID"


@pytest.mark.parametrize("path", ["/health", "/health/ready", "/openapi.json"])
async def test_head_of_a_public_route_needs_no_token(
    auth_api: TestClient, path: str
) -> None:
    response = await auth_api.head(path)

    assert response.status == 200
