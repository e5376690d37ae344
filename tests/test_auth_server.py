"""The server started as the README says, with authentication on.

Each test runs ``python -m app`` as a child process on a free loopback port,
with its embedded store in a temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import JWT_SECRET

pytestmark = pytest.mark.integration

ADMIN = {"username": "ops", "password": "ops-password-1"}
STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("DEARDIARY_")
    }
    env.update(
        DEARDIARY_DATA_DIR=str(data_dir),
        DEARDIARY_PORT=str(port),
        DEARDIARY_ENABLE_AUTH="true",
        DEARDIARY_JWT_SECRET=JWT_SECRET,
        DEARDIARY_BCRYPT_ROUNDS="4",
        **extra,
    )
    return env


async def run_server(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def wait_healthy(session: aiohttp.ClientSession, base: str) -> None:
    for _ in range(STARTUP_SECONDS * 10):
        try:
            async with session.get(f"{base}/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("the server did not come up")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    port = free_port()
    env = environment(
        tmp_path,
        port,
        DEARDIARY_ADMIN_USERNAME=ADMIN["username"],
        DEARDIARY_ADMIN_PASSWORD=ADMIN["password"],
    )
    process = await run_server(env)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base)
            yield base, session
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), STARTUP_SECONDS)
        for secret in (ADMIN["password"], JWT_SECRET):
            assert secret.encode() not in stderr


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    token: str | None = None,
    body: Any = None,
) -> tuple[int, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with session.request(method, url, json=body, headers=headers) as response:
        return response.status, await response.json()


async def test_server_with_auth_on_enforces_spec_5(
    server: tuple[str, aiohttp.ClientSession],
) -> None:
    base, session = server

    _, login = await call(session, "POST", f"{base}/auth", body=ADMIN)
    root = login["access_token"]
    _, project = await call(session, "POST", f"{base}/project", root, {"name": "p"})
    pid = project["project_id"]
    user = {"username": "dev", "password": "dev-password-1"}
    _, created = await call(session, "POST", f"{base}/user", root, user)
    uid = created["user_id"]
    _, dev_login = await call(session, "POST", f"{base}/auth", body=user)
    dev = dev_login["access_token"]

    hidden = await call(session, "GET", f"{base}/project/{pid}", dev)
    flags = {
        "create_permission": False,
        "read_permission": True,
        "update_permission": False,
        "delete_permission": False,
    }
    pair = f"{base}/userpermission/user/{uid}/project/{pid}"
    granted = await call(session, "POST", pair, root, flags)
    readable = await call(session, "GET", f"{base}/project/{pid}", dev)
    refused = await call(
        session, "POST", f"{base}/model/project/{pid}", dev, {"name": "m"}
    )
    anonymous = await call(session, "GET", f"{base}/project")

    assert hidden[0] == 404
    assert granted[0] == 201
    assert readable[0] == 200
    assert (refused[0], refused[1]["code"]) == (403, "PROJECT_PERMISSION_REQUIRED")
    assert (anonymous[0], anonymous[1]["code"]) == (401, "TOKEN_MISSING")


async def test_server_throttles_logins_and_deletes_users_whole(
    server: tuple[str, aiohttp.ClientSession],
) -> None:
    base, session = server
    _, login = await call(session, "POST", f"{base}/auth", body=ADMIN)
    root = login["access_token"]
    user = {"username": "dev", "password": "dev-password-1"}
    _, created = await call(session, "POST", f"{base}/user", root, user)
    _, dev_login = await call(session, "POST", f"{base}/auth", body=user)

    wrong = {"username": "dev", "password": "not-the-password"}
    failures = [(await call(session, "POST", f"{base}/auth", body=wrong))[0]]
    for _ in range(5):
        failures.append((await call(session, "POST", f"{base}/auth", body=wrong))[0])
    deleted = await call(session, "DELETE", f"{base}/user/{created['user_id']}", root)
    after = await call(session, "GET", f"{base}/auth/me", dev_login["access_token"])

    assert failures == [401] * 5 + [429]
    assert deleted[0] == 200
    assert (after[0], after[1]["code"]) == (401, "TOKEN_INVALID")


async def test_first_start_without_admin_credentials_exits_with_code_2(
    tmp_path: Path,
) -> None:
    process = await run_server(environment(tmp_path, free_port()))

    _, stderr = await asyncio.wait_for(process.communicate(), STARTUP_SECONDS)

    assert process.returncode == 2
    last = stderr.decode().strip().splitlines()[-1]
    assert last.startswith("configuration error: DEARDIARY_ADMIN_USERNAME")
