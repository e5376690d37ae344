"""The servers a benchmark run starts: ours, MLflow's, and a bare aiohttp one.

Each listens on a free port of 127.0.0.1 and is stopped by ``stop()``, which
is safe to call twice and after a failed start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO

from procs import command_line, descendants, free_port, stop_tree, wait_healthy

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120.0
# server_ctl.sh waits up to 180 s for /health and 60 s for its workers to
# settle; this bounds the whole start from outside.
MLFLOW_START_TIMEOUT_S = 400.0


class OurServer:
    """``python -m app`` on a fresh data directory.

    Without ``mongo_uri`` it runs the embedded store under ``data_dir``.
    ``workers`` is passed as ``DEARDIARY_WORKERS``; None leaves the server's
    default.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        workers: str | None = None,
        mongo_uri: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.mongo_uri = mongo_uri
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self.process is None else self.process.pid

    def _environment(self) -> dict[str, str]:
        # A DEARDIARY_* variable of the caller's shell (a MongoDB URI, auth)
        # would change what is measured; only the worker count passes.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEARDIARY_")}
        env.update(
            DEARDIARY_HOST="127.0.0.1",
            DEARDIARY_PORT=str(self.port),
            DEARDIARY_DATA_DIR=str(self.data_dir),
        )
        if self.workers is not None:
            env["DEARDIARY_WORKERS"] = self.workers
        if self.mongo_uri is not None:
            env["DEARDIARY_MONGO_URI"] = self.mongo_uri
        return env

    def start(self) -> None:
        """Start the server and wait until it answers /health."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.data_dir / "server.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=REPO,
            env=self._environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_healthy(f"{self.url}/health", self.process, START_TIMEOUT_S)

    def check_alive(self) -> None:
        """Raise, with the exit code, if the server is no longer running."""
        if self.process is None or self.process.poll() is None:
            return
        code = self.process.returncode
        raise RuntimeError(
            f"our server exited with {code}"
            + (f" (signal {-code})" if code < 0 else "")
            + f"; see {self.data_dir / 'server.log'}"
        )

    def store_pids(self) -> list[int]:
        """The embedded store's processes (none with a given URI)."""
        return [p for p in self._tree() if _is_store(p)]

    def server_pids(self) -> list[int]:
        """The server's own processes: the main one and any workers."""
        return [p for p in self._tree() if not _is_store(p)]

    def _tree(self) -> list[int]:
        return [] if self.pid is None else descendants(self.pid)

    def stop(self) -> None:
        """Stop the server (it stops its store); kill what is left."""
        if self.process is not None:
            stop_tree(self.process.pid)
            self.process.wait(timeout=10)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None


def _is_store(pid: int) -> bool:
    return "secantusd" in command_line(pid)


class MlflowServer:
    """MLflow's server on a fresh sqlite database, started by the baseline's
    own ``server_ctl.sh`` (its default workers) in a private directory."""

    def __init__(self, work_dir: Path, baseline_dir: Path, venv: Path) -> None:
        self.work_dir = work_dir
        self.control = baseline_dir / "server_ctl.sh"
        self.venv = venv
        self.port = free_port()
        self.started_line = ""

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id (its process group) while it runs."""
        try:
            return int((self.work_dir / "server.pid").read_text())
        except (OSError, ValueError):
            return None

    def _control(self, *args: str, timeout: float) -> str:
        env = {**os.environ, "BENCH_DIR": str(self.work_dir), "PORT": str(self.port)}
        done = subprocess.run(
            ["bash", str(self.control), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"server_ctl.sh {args[0]} failed: {done.stderr[-800:]}")
        return done.stdout.strip()

    def start(self) -> None:
        """Start ``mlflow server`` on sqlite with its defaults; wait until idle."""
        if not (self.venv / "bin" / "mlflow").exists():
            raise RuntimeError(
                f"no MLflow in {self.venv}: run MLFLOW_SPEC=mlflow==3.17.2 bash "
                f"{self.control.parent / 'setup.sh'}"
            )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # server_ctl.sh runs $BENCH_DIR/venv/bin/mlflow; a link keeps the
        # database, logs and pid file of this run apart from anyone else's.
        link = self.work_dir / "venv"
        if not link.exists():
            link.symlink_to(self.venv)
        self.started_line = self._control(
            "start", "sqlite", "default", timeout=MLFLOW_START_TIMEOUT_S
        )

    def stop(self) -> None:
        """Stop the process group server_ctl.sh started; kill what is left."""
        pid = self.pid
        if pid is None:
            return
        try:
            self._control("stop", timeout=60)
        finally:
            stop_tree(pid, timeout=10)


class FloorServer:
    """A bare aiohttp handler answering a small JSON object."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        """Start the server and wait until it answers."""
        script = Path(__file__).resolve().parent / "floor_server.py"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(script), "--port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_healthy(f"{self.url}/hello", self.process, START_TIMEOUT_S)

    def stop(self) -> None:
        """Stop the server."""
        if self.process is not None:
            stop_tree(self.process.pid, timeout=10)
            self.process.wait(timeout=10)
            self.process = None


class MemoryServer(FloorServer):
    """Our application in one process on an in-memory store (the floor's
    subject: the registry with the store's cost taken out)."""

    def start(self) -> None:
        """Start the server and wait until it answers /health."""
        script = Path(__file__).resolve().parent / "memory_server.py"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(script), "--port", str(self.port)],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_healthy(f"{self.url}/health", self.process, START_TIMEOUT_S)
