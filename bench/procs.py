"""Processes the benchmark starts, and what /proc says about them.

Every server is started in its own session (process group), listens on
127.0.0.1 and is stopped by its own id; whatever survives a polite stop is
killed by pid, descendants included.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = 4


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; fields follow the
    # last closing parenthesis, starting with the state (field 3).
    return text.rsplit(")", 1)[1].split()


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    children = _children_map()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if Path(f"/proc/{pid}").exists():
            found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def command_line(pid: int) -> str:
    """The process's arguments joined by spaces; empty once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def cpu_ticks(pids: Iterable[int]) -> int:
    """User plus system clock ticks the processes have used so far."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` size field (VmRSS, VmHWM) in KiB; 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's VmHWM of ``pid``; False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _machine_busy_ticks() -> int:
    with open("/proc/stat") as stat:
        values = [int(x) for x in stat.readline().split()[1:]]
    return sum(values) - values[3] - values[4]  # minus idle and iowait


@dataclass(frozen=True)
class CpuSnapshot:
    """Clock ticks so far: the machine's, each server process's, the store's,
    and this process's CPU seconds."""

    machine: int
    server: dict[int, int]
    store: int
    client: float


class CpuMeter:
    """Cores used by a server's process tree, the benchmark and the rest."""

    def __init__(self, root: int | None, store_marker: str = "secantusd") -> None:
        self.root = root
        self.store_marker = store_marker

    def _split(self) -> tuple[list[int], list[int]]:
        if self.root is None:
            return [], []
        pids = descendants(self.root)
        store = [p for p in pids if self.store_marker in command_line(p)]
        return [p for p in pids if p not in store], store

    def snapshot(self) -> CpuSnapshot:
        """The counters now."""
        server, store = self._split()
        times = os.times()
        return CpuSnapshot(
            machine=_machine_busy_ticks(),
            server={pid: cpu_ticks([pid]) for pid in server},
            store=cpu_ticks(store),
            client=times.user + times.system,
        )

    def since(self, before: CpuSnapshot, elapsed: float) -> dict[str, Any]:
        """Average cores used since ``before``, by whom; ``processes`` splits
        the server's share by process (main process and workers)."""
        after = self.snapshot()

        def cores(ticks: int) -> float:
            return round(ticks / CLOCK_TICKS / elapsed, 2)

        per_process = sorted(
            (
                cores(ticks - before.server.get(pid, 0))
                for pid, ticks in after.server.items()
            ),
            reverse=True,
        )
        machine = cores(after.machine - before.machine)
        server = round(sum(per_process), 2)
        store = cores(after.store - before.store)
        client = round((after.client - before.client) / elapsed, 2)
        return {
            "machine": machine,
            "server": server,
            "store": store,
            "client": client,
            "other": round(machine - server - store - client, 2),
            "processes": [c for c in per_process if c > 0],
        }


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until ``url`` answers 200; raise if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def stop_tree(root: int, *, timeout: float = 30.0) -> None:
    """SIGTERM ``root``, wait, then SIGKILL whatever of its tree survived."""
    # A pid is only signalled while it still names the process seen here
    # (same start time), never a newcomer that reused the number.
    tree = {pid: _start_time(pid) for pid in descendants(root)}
    _signal(root, tree.get(root), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(
        _alive(pid, started) for pid, started in tree.items()
    ):
        time.sleep(0.2)
    for pid, started in tree.items():
        if _alive(pid, started):
            _signal(pid, started, signal.SIGKILL)


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return None if fields is None else fields[19]


def _alive(pid: int, started: str | None) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z" and fields[19] == started


def _signal(pid: int, started: str | None, signum: int) -> None:
    if started is None or _start_time(pid) != started:
        return
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
