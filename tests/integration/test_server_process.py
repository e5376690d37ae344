"""``python -m app`` as a real process: its embedded store, signals, restarts.

The server is started the way a user starts it, with only environment
variables; its embedded SecantusDB child is found through /proc by the
storage path on its command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.embedded import EmbeddedStore, free_port
from app.mongo import open_client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 30.0


class Server:
    """One ``python -m app`` process and where it writes its log."""

    def __init__(
        self, process: asyncio.subprocess.Process, port: int, log: Path
    ) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_exit(self) -> int:
        """The exit code, once the process has ended."""
        return await asyncio.wait_for(self.process.wait(), EXIT_TIMEOUT_S)


Launch = Callable[..., Awaitable[Server]]


def _store_pids(storage: Path) -> list[int]:
    """Processes whose storage path on their command line is under ``storage``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        words = args.split("\0")
        if "--storage-path" not in words[:-1]:
            continue
        path = Path(words[words.index("--storage-path") + 1])
        if path.is_relative_to(storage):
            pids.append(int(entry.name))
    return pids


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


async def _gone(pid: int) -> bool:
    """Wait, bounded, for ``pid`` to end; True when it did."""
    for _ in range(int(EXIT_TIMEOUT_S * 10)):
        if not _running(pid):
            return True
        await asyncio.sleep(0.1)
    return False


async def _wait_healthy(server: Server) -> None:
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    async with aiohttp.ClientSession() as http:
        while asyncio.get_running_loop().time() < deadline:
            if server.process.returncode is not None:
                pytest.fail(f"server exited early:\n{server.output()}")
            try:
                async with http.get(f"{server.url}/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.2)
    pytest.fail(f"server did not answer in time:\n{server.output()}")


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    """Start ``python -m app`` processes; whatever is left is killed after."""
    started: list[Server] = []
    logs = itertools.count(1)

    async def start(data_dir: Path, **env: str) -> Server:
        port = free_port()
        log = tmp_path / f"server-{next(logs)}.log"
        environ = {
            k: v for k, v in os.environ.items() if not k.startswith("DEARDIARY_")
        }
        environ.update(
            DEARDIARY_PORT=str(port),
            DEARDIARY_DATA_DIR=str(data_dir),
            PYTHONUNBUFFERED="1",
            **env,
        )
        with log.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "app",
                cwd=ROOT,
                env=environ,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                # Its own process group, like a program started in a shell,
                # so a Ctrl-C can be sent to that group.
                start_new_session=True,
            )
        server = Server(process, port, log)
        started.append(server)
        await _wait_healthy(server)
        return server

    yield start

    for server in started:
        if server.process.returncode is not None:
            continue
        server.process.send_signal(signal.SIGTERM)
        try:
            await server.wait_exit()
        except TimeoutError:
            server.process.kill()
            await server.process.wait()
    for pid in _store_pids(tmp_path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def _post(http: aiohttp.ClientSession, url: str, body: Any) -> Any:
    async with http.post(url, json=body) as response:
        payload = await response.json()
        assert response.status == 201, payload
        return payload


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def test_sigterm_stops_server_and_store_and_data_survives_restart(
    launch: Launch, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = await launch(data_dir)
    [store_pid] = _store_pids(data_dir / "store")
    assert _parent(store_pid) == server.process.pid
    async with aiohttp.ClientSession() as http:
        project = await _post(http, f"{server.url}/project", {"name": "vision"})
        model = await _post(
            http,
            f"{server.url}/model/project/{project['project_id']}",
            {"name": "fraud-classifier"},
        )

    server.process.send_signal(signal.SIGTERM)

    assert await server.wait_exit() == 0, server.output()
    assert await _gone(store_pid), "the embedded store outlived the server"
    assert "embedded store SecantusDB started" in server.output()

    again = await launch(data_dir)
    async with aiohttp.ClientSession() as http:
        status, found = await _get(http, f"{again.url}/model/{model['model_id']}")
        _, projects = await _get(http, f"{again.url}/project")
    assert status == 200, found
    assert found["name"] == "fraud-classifier"
    assert found["project_id"] == project["project_id"]
    assert "vision" in [p["name"] for p in projects["data"]]


async def test_ctrl_c_stops_server_and_store_cleanly(
    launch: Launch, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = await launch(data_dir)
    [store_pid] = _store_pids(data_dir / "store")
    assert _parent(store_pid) == server.process.pid

    # A Ctrl-C in a shell reaches the foreground process group.
    os.killpg(server.process.pid, signal.SIGINT)

    assert await server.wait_exit() == 0, server.output()
    assert await _gone(store_pid), "the embedded store outlived the server"
    assert "Traceback" not in server.output()


async def test_given_mongo_uri_is_used_and_no_store_is_started(
    launch: Launch, tmp_path: Path, secantus: EmbeddedStore
) -> None:
    data_dir = tmp_path / "data"
    db_name = "process_given_uri"

    server = await launch(
        data_dir, DEARDIARY_MONGO_URI=secantus.uri, DEARDIARY_DB_NAME=db_name
    )
    async with aiohttp.ClientSession() as http:
        await _post(http, f"{server.url}/project", {"name": "vision"})
    stores = _store_pids(tmp_path)
    server.process.send_signal(signal.SIGTERM)

    assert await server.wait_exit() == 0, server.output()
    output = server.output()
    assert "MongoDB store" in output and "using MongoDB at" in output, output
    assert "embedded store" not in output, output
    assert stores == []
    assert not (data_dir / "store").exists()
    mongo = open_client(secantus.uri, timeout_ms=5000)
    try:
        assert await mongo[db_name].projects.count_documents({"name": "vision"}) == 1
        await mongo.drop_database(db_name)
    finally:
        mongo.close()
