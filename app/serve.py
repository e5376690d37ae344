"""Serving: the listening socket, worker processes and orderly shutdown.

``serve`` first takes what the server needs (the embedded store's data
directory, locked against a second server; the listening socket), so that
a taken port or a directory in use is one line and exit code 2 at startup.
With one worker (``DEARDIARY_WORKERS=1``) the application runs in this
process. With more, this process supervises:

1. it starts the embedded store when no MongoDB URI is set, once for all
   workers, and stops it last;
2. it starts the first worker and waits until it is ready, so indexes, id
   counters and the admin user are created once, then the other workers;
   every worker accepts connections on the one shared socket;
3. on SIGTERM or SIGINT it sends each worker SIGTERM: a worker stops
   accepting, finishes the requests in flight for up to
   ``DEARDIARY_SHUTDOWN_GRACE_SECONDS``, closes its MongoDB client and
   exits; then the store is stopped. Further stop signals are ignored;
4. a worker that exits on its own is a failure: the others are stopped the
   same way and the server exits with code 1, for the container's restart
   policy to start it again whole.

Workers run ``python -m app.serve``: they read their orders (the settings,
the socket's descriptor, where to say they are ready) as JSON on stdin,
never from the environment, and are sent SIGTERM by the kernel should the
supervisor die without stopping them. They share their metrics through
prometheus-client's multiprocess directory, a fresh one for each start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import json
import logging
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import multiprocess
from pymongo.errors import ConnectionFailure, PyMongoError

from app import keys
from app.embedded import (
    EmbeddedStore,
    EmbeddedStoreError,
    check_installed,
    claimed_data_dir,
    die_with_parent,
)
from app.logs import configure
from app.server import create_app
from app.settings import PREFIX, ConfigError, Settings
from app.web.owners import PEERS, Peers

log = logging.getLogger("deardiary.serve")

BACKLOG = 1024
# What aiohttp gets, after the grace period, to cancel what is left.
STRAGGLER_TIMEOUT_S = 1.0
# Time a worker gets beyond the grace period to close its client and exit.
STOP_MARGIN_S = 10.0
READY = b"ready\n"


def print_error(line: str) -> None:
    """Write one line to stderr."""
    print(line, file=sys.stderr)


def serve(settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT; the process's exit code.

    What the server needs before it can serve (the embedded store
    installed, its data directory to itself, the port) is checked first:
    a problem there is one line and exit code 2.
    """
    limit_malloc_arenas()
    try:
        with contextlib.ExitStack() as held:
            if settings.embedded:
                check_installed()
                held.enter_context(claimed_data_dir(settings.data_dir))
            sock = held.enter_context(bind(settings))
            _announce(settings)
            if settings.worker_count == 1:
                return run_app(create_app(settings), settings, sock)
            return asyncio.run(Supervisor(settings, sock).run())
    except ConfigError as exc:
        print_error(f"configuration error: {exc}")
        return 2


# mallopt's parameter for the most arenas glibc may make (<malloc.h>).
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def limit_malloc_arenas() -> bool:
    """Keep glibc's allocator to MALLOC_ARENAS arenas in this process.

    The driver does its I/O on a pool of threads, and glibc gives threads
    arenas of their own, each keeping what was freed in it: after a large
    download the process stays hundreds of megabytes bigger. Elsewhere than
    on glibc this does nothing; True when the limit was set.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, MALLOC_ARENAS))


def bind(settings: Settings) -> socket.socket:
    """The listening socket, or ConfigError naming the variable to change."""
    host, port = settings.host, settings.port
    try:
        return listen(host, port)
    except socket.gaierror as exc:
        raise ConfigError(
            PREFIX + "HOST", f"cannot resolve {host}: {exc.strerror}"
        ) from None
    except OSError as exc:
        variable = "HOST" if exc.errno == errno.EADDRNOTAVAIL else "PORT"
        raise ConfigError(
            PREFIX + variable, f"cannot listen on {host}:{port}: {exc.strerror}"
        ) from None


def _announce(settings: Settings) -> None:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    workers = settings.worker_count
    log.info(
        "DearDiary registry on http://%s:%d (%s store, %d worker%s)",
        host,
        settings.port,
        "embedded" if settings.embedded else "MongoDB",
        workers,
        "" if workers == 1 else "s",
    )


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host`` and ``port``."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def run_app(
    app: web.Application,
    settings: Settings,
    sock: socket.socket,
    *,
    say: Callable[[str], None] = print_error,
) -> int:
    """Serve ``app`` on ``sock`` until SIGTERM or SIGINT; the exit code.

    ``say`` tells a configuration error met at startup.
    """
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve_app(app, settings, sock))
    except ConfigError as exc:
        # Raised while opening the store: auth is on, no admin can log in
        # yet, and the settings do not name one to create.
        say(f"configuration error: {exc}")
        return 2
    except ConnectionFailure:
        log.error("MongoDB did not answer at startup within %sMONGO_TIMEOUT_MS", PREFIX)
        return 1
    except PyMongoError as exc:
        # Refused credentials, an index that conflicts with one already
        # there: the server's own words, which hold no secret.
        log.error("MongoDB refused the registry's startup: %s", exc)
        return 1
    except EmbeddedStoreError as exc:
        log.error("%s", exc)
        return 1
    return 0


async def _serve_app(
    app: web.Application, settings: Settings, sock: socket.socket
) -> None:
    # aiohttp's own shutdown stops reading request bodies at once, which
    # would cut uploads short; so requests in flight are waited for first,
    # and only then does aiohttp close what is left.
    stop = _on_stop_signals(asyncio.Event())
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=STRAGGLER_TIMEOUT_S)
    try:
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
        if PEERS in app:
            # Where the other workers hand over the writes of this one's
            # models; it stays open until the end, for what they still send.
            peers = app[PEERS]
            await web.UnixSite(runner, str(peers.socket_path(peers.index))).start()
        await stop.wait()

        grace = settings.shutdown_grace_seconds
        log.info("stopping: requests in flight get up to %g s", grace)
        await site.stop()
        tracker = app[keys.IN_FLIGHT]
        if not await tracker.drained(grace):
            log.warning("%d requests cut off by the grace period", tracker.count)
    finally:
        await runner.cleanup()
        _ignore_stop_signals()


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _on_stop_signals(stop: asyncio.Event) -> asyncio.Event:
    """``stop``, to be set by the first SIGTERM or SIGINT.

    Later ones are noted and ignored: an impatient second Ctrl-C must not
    cut short the requests in flight, nor leave the store running.
    """
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        if stop.is_set():
            log.info("already stopping: %s ignored", signum.name)
            return
        stop.set()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    return stop


def _ignore_stop_signals() -> None:
    """Ignore the stop signals from now until the process exits.

    Closing the event loop would give them back their default action,
    which would kill the process while it finishes stopping.
    """
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.remove_signal_handler(signum)
        signal.signal(signum, signal.SIG_IGN)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


class Supervisor:
    """Starts the workers, forwards the stop signal, stops the store last."""

    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        self.settings = settings
        self.sock = sock
        self.workers: list[asyncio.subprocess.Process] = []
        self._readiness: list[asyncio.Future[bytes]] = []
        # A configuration error a worker met, told last, after cleanup.
        self._config_error: str | None = None
        self._stopping = asyncio.Event()
        # What every worker is told, once the store and directory exist.
        self._orders: dict[str, Any] = {}

    async def run(self) -> int:
        """Serve until told to stop or a worker fails; the exit code."""
        try:
            code = await self._run()
        finally:
            _ignore_stop_signals()
        if self._config_error is not None:
            print_error(self._config_error)
        return code

    async def _run(self) -> int:
        _on_stop_signals(self._stopping)
        async with contextlib.AsyncExitStack() as stack:
            try:
                uri = await self._store_uri(stack)
            except EmbeddedStoreError as exc:
                log.error("%s", exc)
                return 1
            metrics_dir = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="deardiary-metrics-")
            )
            peers_dir = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="deardiary-workers-")
            )
            stack.push_async_callback(self._stop_workers, metrics_dir)
            worker_settings = self.settings.model_copy(update={"mongo_uri": uri})
            self._orders = {
                "settings": worker_settings.model_dump(mode="json"),
                "metrics_dir": metrics_dir,
                "peers_dir": peers_dir,
                "worker_count": self.settings.worker_count,
                "socket_fd": self.sock.fileno(),
            }
            return await self._serve()
        return 0  # pragma: no cover - the stack does not swallow exceptions

    async def _store_uri(self, stack: contextlib.AsyncExitStack) -> str:
        if self.settings.mongo_uri is not None:
            return self.settings.mongo_uri
        store = EmbeddedStore(self.settings.data_dir / "store")
        await store.start()
        stack.push_async_callback(store.stop)
        return store.uri

    async def _serve(self) -> int:
        code = await self._start_workers()
        if code is not None:
            return code
        if all(line == READY for line in await asyncio.gather(*self._readiness)):
            log.info("%d workers ready", len(self.workers))

        stopping = asyncio.create_task(self._stopping.wait())
        exits = {asyncio.create_task(worker.wait()): worker for worker in self.workers}
        done, pending = await asyncio.wait(
            [stopping, *exits], return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        if stopping in done:
            return 0
        failed = exits[next(task for task in done if task in exits)]
        log.error(
            "worker %d exited unexpectedly with code %s; stopping the server",
            failed.pid,
            failed.returncode,
        )
        return 1

    async def _start_workers(self) -> int | None:
        """Start every worker, the first alone; an exit code on failure."""
        for number in range(self.settings.worker_count):
            if self._stopping.is_set():
                return 0
            ready = await self._spawn()
            self._readiness.append(ready)
            if number == 0 and await ready != READY:
                return await self._first_failed(await ready)
        # The workers hold the socket now; this process takes no part.
        self.sock.close()
        return None

    async def _first_failed(self, said: bytes) -> int:
        # A worker that fails to start logs why, or tells its configuration
        # error; its exit code (2 for a configuration error) is the server's.
        if said.startswith(b"configuration error: "):
            self._config_error = said.decode(errors="replace").strip()
        code = await self.workers[0].wait()
        return code if code else 1

    async def _spawn(self) -> asyncio.Future[bytes]:
        """Start one worker; the future has its first word: ready, or not."""
        read_fd, write_fd = os.pipe()
        try:
            worker = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "app.serve",
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(self.sock.fileno(), write_fd),
                env=_worker_environ(self._orders["metrics_dir"]),
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        finally:
            os.close(write_fd)
        self.workers.append(worker)
        assert worker.stdin is not None
        orders = {
            **self._orders,
            "ready_fd": write_fd,
            "worker_index": len(self.workers) - 1,
        }
        worker.stdin.write(json.dumps(orders).encode())
        await worker.stdin.drain()
        worker.stdin.close()
        return asyncio.ensure_future(_became_ready(read_fd))

    async def _stop_workers(self, metrics_dir: str) -> None:
        running = [w for w in self.workers if w.returncode is None]
        if running:
            log.info("stopping %d workers", len(running))
        for worker in running:
            worker.send_signal(signal.SIGTERM)
        limit = self.settings.shutdown_grace_seconds + STOP_MARGIN_S
        waits = [asyncio.wait_for(worker.wait(), limit) for worker in running]
        for worker, outcome in zip(
            running, await asyncio.gather(*waits, return_exceptions=True), strict=True
        ):
            if isinstance(outcome, TimeoutError):
                log.warning("worker %d did not stop in time; killing it", worker.pid)
                worker.kill()
                await worker.wait()
        for worker in self.workers:
            multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                worker.pid, metrics_dir
            )


def _worker_environ(metrics_dir: str) -> dict[str, str]:
    """This process's environment for a worker.

    Workers get their settings on stdin: the ``DEARDIARY_*`` variables,
    secrets among them, are not passed on. prometheus-client reads its
    directory from the environment when a worker imports it.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    return {**environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}


async def _became_ready(read_fd: int) -> bytes:
    """The worker's first line: READY, a configuration error, or b"" if it
    exited without a word."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(read_fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), pipe
    )
    try:
        return await reader.readline()
    finally:
        transport.close()


# The worker side --------------------------------------------------------


def _worker_main() -> int:
    limit_malloc_arenas()
    orders = json.loads(sys.stdin.buffer.read())
    settings = Settings.model_validate(orders["settings"])
    configure(settings)
    sock = socket.socket(fileno=orders["socket_fd"])
    peers = Peers(
        orders["worker_index"], orders["worker_count"], Path(orders["peers_dir"])
    )
    app = create_app(settings, metrics_dir=Path(orders["metrics_dir"]), peers=peers)
    app.on_startup.append(_announce_ready(orders["ready_fd"]))
    return run_app(app, settings, sock, say=_teller(orders["ready_fd"]))


def _teller(ready_fd: int) -> Callable[[str], None]:
    # The supervisor tells the error itself, once everything is stopped.
    def tell(line: str) -> None:
        os.write(ready_fd, line.replace("\n", " ").encode() + b"\n")

    return tell


def _announce_ready(
    ready_fd: int,
) -> Callable[[web.Application], Awaitable[None]]:
    # Appended after the cleanup contexts: it runs once the store is open.
    async def announce(app: web.Application) -> None:
        os.write(ready_fd, READY)
        os.close(ready_fd)

    return announce


if __name__ == "__main__":
    sys.exit(_worker_main())
