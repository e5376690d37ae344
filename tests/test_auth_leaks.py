"""No password, hash or token in a response body or a log line.

Every test of the suite is watched by the `no_secret_leaks` fixture of
conftest.py; these tests drive the paths most likely to leak, and check
that the watch itself sees what it must.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN_PASSWORD, USER_PASSWORD, Caller, SecretRecorder


async def test_watch_sees_passwords_hashes_and_bodies(
    admin: Caller, no_secret_leaks: SecretRecorder
) -> None:
    await admin.post("/user", json={"username": "alice", "password": USER_PASSWORD})

    secrets = no_secret_leaks.secrets
    assert {ADMIN_PASSWORD, USER_PASSWORD} <= secrets
    assert any(secret.startswith("$2b$04$") for secret in secrets)
    assert any("access_token" in body for body in no_secret_leaks.bodies)
    assert no_secret_leaks.leaks() == []


async def test_watch_catches_a_leak(no_secret_leaks: SecretRecorder) -> None:
    no_secret_leaks.secret("a-password-that-leaks")
    logging.getLogger("deardiary.test").info("user typed a-password-that-leaks")

    found = no_secret_leaks.leaks()

    no_secret_leaks.logs.clear()
    assert found == ["secret in a log"]


async def test_user_records_and_lists_carry_no_hash(
    admin: Caller, make_user: Any, mongo: Any, auth_settings: Any
) -> None:
    alice = await make_user("alice")

    bodies = [
        await (await admin.get("/user")).text(),
        await (await admin.get(f"/user/{alice.user_id}")).text(),
        await (await alice.get("/auth/me")).text(),
        await (await alice.post("/auth/refresh")).text(),
    ]

    stored = await mongo[auth_settings.db_name].users.find_one({"username": "alice"})
    assert stored["password_hash"].startswith("$2b$")
    assert not any("password" in body for body in bodies)


async def test_refused_passwords_are_not_echoed(
    admin: Caller, make_user: Any, auth_api: TestClient
) -> None:
    alice = await make_user("alice")
    attempts = [
        await admin.post("/user", json={"username": "b", "password": "secret7"}),
        await admin.post("/user", json={"username": "b", "password": "s" * 80}),
        await alice.patch(f"/user/{alice.user_id}", json={"password": "tiny-pw"}),
        await auth_api.post("/auth", json={"username": "alice", "password": 12345678}),
        await auth_api.post(
            "/auth", json={"username": "alice", "password": "not-her-password"}
        ),
    ]

    bodies = [await response.text() for response in attempts]

    assert [response.status for response in attempts] == [422, 422, 422, 422, 401]
    for secret in ("secret7", "s" * 80, "tiny-pw", "12345678", "not-her-password"):
        assert not any(secret in body for body in bodies)


async def test_failed_and_throttled_logins_log_no_password(
    auth_api: TestClient, no_secret_leaks: SecretRecorder
) -> None:
    for _ in range(7):
        await auth_api.post(
            "/auth", json={"username": "root", "password": "guessed-password"}
        )

    assert "guessed-password" in no_secret_leaks.secrets
    assert no_secret_leaks.leaks() == []
