"""Sampling profiles of our server while a loop runs, with py-spy.

``registry_bench.py --profile DIR`` records one profile per operation at the
highest concurrency: py-spy samples the server, its workers and the
embedded store (all Python) without stopping them, and writes collapsed
stacks (``DIR/<operation>.txt``) that speedscope or flamegraph.pl open.
``python bench/profiling.py DIR/<operation>.txt`` prints where the time
went. py-spy is not a dependency of the project: install it into the venv
(``.venv/bin/pip install py-spy``) to profile.

Sampling costs CPU on the same cores: numbers measured while profiling are
not comparable and are marked so.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

STOP_TIMEOUT_S = 30.0


def py_spy() -> str | None:
    """The py-spy executable beside this Python or on the PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def recording(pid: int, out: Path) -> Iterator[None]:
    """Sample ``pid`` and its children into ``out`` while the block runs."""
    executable = py_spy()
    if executable is None:
        raise RuntimeError("py-spy not found: .venv/bin/pip install py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            executable, "record",
            "--pid", str(pid),
            "--subprocesses",
            "--nonblocking",
            "--gil",
            "--format", "raw",
            "--output", str(out),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        # py-spy writes its file when interrupted.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip().rpartition(" ")
    return stack.split(";"), int(count)


def _short(process: str) -> str:
    # 'process 12:"/venv/bin/python -m app.serve"' -> 'app.serve (12)'
    pid, _, command = process.removeprefix("process ").partition(":")
    words = command.strip('"').split()
    name = words[-1] if "-m" not in words else words[words.index("-m") + 1]
    if "secantusd" in command:
        name = "secantusd (store)"
    return f"{name} ({pid})"


def summarize(path: Path, top: int = 25) -> str:
    """Where the samples of a collapsed-stack file went."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    processes: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        frames, count = _frames(line)
        # With --subprocesses a stack starts with the chain of processes
        # down to the sampled one.
        chain = [f for f in frames if f.startswith("process ")]
        code = frames[len(chain) :] or ["(no Python frame)"]
        total += count
        processes[_short(chain[-1]) if chain else "?"] += count
        own[code[-1]] += count
        for frame in set(code):
            inclusive[frame] += count

    def share(counter: Counter[str]) -> list[str]:
        return [
            f"{count / total:6.1%}  {name}" for name, count in counter.most_common(top)
        ]

    lines = [f"{total} samples", "", "by process:", *share(processes)]
    lines += ["", "self time:", *share(own)]
    lines += ["", "inclusive time:", *share(inclusive)]
    return "\n".join(lines)


def main() -> None:
    """Print the summary of each file named."""
    parser = argparse.ArgumentParser(description="Summarize py-spy raw profiles.")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for path in args.files:
        print(f"== {path}\n{summarize(path, args.top)}\n")


if __name__ == "__main__":
    main()
