"""``python -m app`` as a real process, and a look at its children.

`Servers` starts servers the way a user does, with environment variables
only, waits until they answer, and at the end stops whatever is left,
politely first. The helpers below read /proc to find a server's workers
and its embedded store.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from app.embedded import free_port
from app.settings import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 60.0


class Server:
    """One ``python -m app`` process and the file its output goes to."""

    def __init__(
        self, process: asyncio.subprocess.Process, port: int, log: Path
    ) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_exit(self) -> int:
        """The exit code, once the process has ended (bounded)."""
        return await asyncio.wait_for(self.process.wait(), EXIT_TIMEOUT_S)

    def workers(self) -> list[int]:
        """Pids of the worker processes serving for this server."""
        return [pid for pid in children(self.pid) if "app.serve" in cmdline(pid)]

    def stores(self) -> list[int]:
        """Pids of the embedded stores this server started."""
        return [pid for pid in children(self.pid) if "--storage-path" in cmdline(pid)]


class Servers:
    """Starts servers for one test; stops every one still running after it."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp_path = tmp_path
        self._logs = itertools.count(1)
        self._started: list[Server] = []

    async def __aenter__(self) -> Servers:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for server in self._started:
            await _stop(server)

    async def start(
        self, data_dir: Path | None = None, *, wait: bool = True, **env: str
    ) -> Server:
        """Start ``python -m app`` with these ``DEARDIARY_*`` variables."""
        port = int(env.pop("DEARDIARY_PORT", 0)) or free_port()
        log = self._tmp_path / f"server-{next(self._logs)}.log"
        environ = {
            k: v for k, v in os.environ.items() if not k.startswith("DEARDIARY_")
        }
        environ.update(
            DEARDIARY_PORT=str(port),
            DEARDIARY_DATA_DIR=str(data_dir or self._tmp_path / "data"),
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
                start_new_session=True,
            )
        server = Server(process, port, log)
        self._started.append(server)
        if wait:
            await wait_healthy(server)
            if _worker_count(environ) > 1:
                await wait_output(server, "workers ready")
        return server


def _worker_count(env: dict[str, str]) -> int:
    try:
        return load_settings(env).worker_count
    except ConfigError:
        return 1  # it will not start: nothing to wait for but its exit


async def wait_output(server: Server, text: str) -> None:
    """Wait, bounded, until the server's output contains ``text``."""
    for _ in range(int(START_TIMEOUT_S * 10)):
        if text in server.output():
            return
        if server.process.returncode is not None:
            break
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {text!r} in the output:\n{server.output()}")


async def wait_healthy(server: Server) -> None:
    """Wait, bounded, until the server's liveness probe answers 200."""
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    async with aiohttp.ClientSession() as http:
        while asyncio.get_running_loop().time() < deadline:
            if server.process.returncode is not None:
                raise AssertionError(f"server exited early:\n{server.output()}")
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with http.get(f"{server.url}/health") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise AssertionError(f"server did not answer in time:\n{server.output()}")


async def _stop(server: Server) -> None:
    family = [*server.workers(), *server.stores()]
    if server.process.returncode is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            await server.wait_exit()
        except TimeoutError:
            server.process.kill()
            await server.process.wait()
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def children(pid: int) -> list[int]:
    """Running processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and running(int(entry.name)):
            with contextlib.suppress(OSError, IndexError):
                if _stat(int(entry.name))[1] == str(pid):
                    found.append(int(entry.name))
    return found


def cmdline(pid: int) -> str:
    """The process's command line, words separated by spaces."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.decode(errors="replace").replace("\0", " ")


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return _stat(pid)[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


async def gone(pid: int) -> bool:
    """Wait, bounded, for ``pid`` to end; True when it did."""
    for _ in range(int(EXIT_TIMEOUT_S * 10)):
        if not running(pid):
            return True
        await asyncio.sleep(0.1)
    return False


def _stat(pid: int) -> list[str]:
    # State and parent pid, after the command name (which may hold spaces).
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


async def fetch(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    """Status and JSON body of one request."""
    async with http.request(method, url, **kwargs) as response:
        return response.status, await response.json(content_type=None)
