"""This registry against MLflow's, on this machine, in one run.

    .venv/bin/python bench/registry_bench.py [--quick] [--requests N]
        [--max-seconds S] [--runs R] [--skip-mlflow] [--workers W]

Starts our server (embedded store, fresh data directory) and MLflow's
(sqlite, its defaults, through the baseline's server_ctl.sh) on loopback,
drives both with the same bounded load loop over five operations at c=1 and
c=32, and prints req/s, p50 and p99 side by side with the ratios. Then the
racing-promotion check on both, the floor (a bare aiohttp handler against
our GET by id on a memory-backed store) and the memory check (a large
upload and download). Results also go to bench/results/<timestamp>.json.
Every server is stopped at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import memory
import profiling
import report
from loadgen import Http, LoopStats, Request, run_loop
from procs import CpuMeter
from registries import OPERATIONS, MlflowRegistry, OurRegistry, Registry, Workload
from servers import REPO, FloorServer, MemoryServer, MlflowServer, OurServer

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_BASELINE = REPO.parent / "shared" / "bench" / "mlflow-baseline"
MLFLOW_VENV = Path("/tmp/mlflow-bench/venv")
TOP_UP_SECONDS = 180.0  # bounds the unmeasured creation of list fixtures


@dataclass(frozen=True)
class Options:
    """What one benchmark run does."""

    requests: int
    max_seconds: float
    warmup: int
    runs: int
    concurrency: tuple[int, ...]
    operations: tuple[str, ...]
    list_models: int
    race_rounds: int
    upload_mib: int
    workers: str | None
    skip_mlflow: bool
    skip_floor: bool
    skip_memory: bool
    mlflow_baseline: Path
    mlflow_venv: Path
    profile: Path | None
    keep: bool


def parse_options(argv: list[str]) -> Options:
    """Options from the command line; --quick changes the defaults."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="a short run (about 2 minutes)")
    add("--requests", type=int, help="requests per loop (default 2000; quick 300)")
    add("--max-seconds", type=float, help="seconds per loop (default 20; quick 4)")
    add("--warmup", type=int, help="uncounted requests first (default 100; 30)")
    add("--runs", type=int, default=1, help="fresh servers per run; medians")
    add("--concurrency", default="1,32", help="client counts (default 1,32)")
    add("--operations", default=",".join(OPERATIONS), help="which operations")
    add("--list-models", type=int, help="models before the list (4200; 1000)")
    add("--race-rounds", type=int, help="racing-promotion rounds (5; quick 3)")
    add("--upload-mib", type=int, help="size of the memory check (1024; 256)")
    add("--workers", help="DEARDIARY_WORKERS for our server (default: unset)")
    add("--skip-mlflow", action="store_true", help="compare to recorded numbers")
    add("--skip-floor", action="store_true")
    add("--skip-memory", action="store_true")
    add("--mlflow-baseline", type=Path, default=SHARED_BASELINE)
    add("--mlflow-venv", type=Path, default=MLFLOW_VENV)
    add("--profile", type=Path, help="py-spy profiles of ours at top c, here")
    add("--keep", action="store_true", help="keep data and logs of the servers")
    args = parser.parse_args(argv)

    quick = args.quick
    operations = tuple(args.operations.split(","))
    unknown = set(operations) - set(OPERATIONS)
    if unknown:
        parser.error(f"unknown operations: {', '.join(sorted(unknown))}")
    if not args.skip_mlflow:
        _check_mlflow(parser, args.mlflow_baseline, args.mlflow_venv)
    return Options(
        requests=args.requests or (300 if quick else 2000),
        max_seconds=args.max_seconds or (4.0 if quick else 20.0),
        warmup=args.warmup if args.warmup is not None else (30 if quick else 100),
        runs=max(1, args.runs),
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        operations=operations,
        list_models=args.list_models or (1000 if quick else 4200),
        race_rounds=args.race_rounds or (3 if quick else 5),
        upload_mib=args.upload_mib or (256 if quick else 1024),
        workers=args.workers or os.environ.get("DEARDIARY_WORKERS"),
        skip_mlflow=args.skip_mlflow,
        skip_floor=args.skip_floor,
        skip_memory=args.skip_memory,
        mlflow_baseline=args.mlflow_baseline,
        mlflow_venv=args.mlflow_venv,
        profile=args.profile,
        keep=args.keep,
    )


def _check_mlflow(parser: argparse.ArgumentParser, baseline: Path, venv: Path) -> None:
    # Said before any server starts, in one line naming the option to set.
    if not (baseline / "server_ctl.sh").is_file():
        parser.error(
            f"no MLflow harness at {baseline}: name it with --mlflow-baseline "
            "DIR, or leave MLflow out with --skip-mlflow"
        )
    if not (venv / "bin" / "mlflow").is_file():
        parser.error(
            f"no MLflow venv at {venv}: run the harness's setup.sh, name the "
            "venv with --mlflow-venv DIR, or leave MLflow out with --skip-mlflow"
        )


def log(message: str) -> None:
    """A progress line on stderr, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# One registry's measurements -------------------------------------------------


class Subject:
    """A registry under test: its server, its API and its numbers."""

    def __init__(
        self,
        registry: Registry,
        cpu: CpuMeter,
        server: OurServer | MlflowServer | MemoryServer,
    ) -> None:
        self.registry = registry
        self.cpu = cpu
        self.server = server
        self.models_created = 0
        self.results: dict[str, dict[int, dict[str, Any]]] = {}

    @property
    def name(self) -> str:
        """``ours`` or ``mlflow``."""
        return self.registry.name

    async def measure(self, operation: str, concurrency: int, opts: Options) -> None:
        """Warm up, then measure one operation at one concurrency."""
        if isinstance(self.server, OurServer):
            self.server.check_alive()
        workload = await self.registry.workload(operation, concurrency)
        http = self.registry.http
        if opts.warmup:
            warm = await run_loop(
                http,
                workload.make("w"),
                requests=opts.warmup,
                concurrency=concurrency,
                max_seconds=opts.max_seconds,
            )
            self._count_models(operation, warm)
        before = await self.registry.counters()
        with self._profiled(operation, concurrency, opts):
            stats = await run_loop(
                http,
                workload.make(""),
                requests=opts.requests,
                concurrency=concurrency,
                max_seconds=opts.max_seconds,
                cpu=self.cpu,
            )
        self._count_models(operation, stats)
        found = stats.to_json()
        found["profiled"] = self._is_profiled(concurrency, opts)
        found["server_counters"] = _per_request(
            await self.registry.counters() - before, stats.requests
        )
        if workload.verify is not None:
            found["check"] = await workload.verify()
        self.results.setdefault(operation, {})[concurrency] = found
        log(
            f"{self.name:<6} {operation:<16} c={concurrency:<3} "
            f"{stats.rps:>8.1f} req/s  p50 {stats.p50_ms:>8.1f} ms  "
            f"p99 {stats.p99_ms:>8.1f} ms  n={stats.requests} "
            f"non-2xx={stats.requests - stats.ok} cpu={stats.cpu} "
            f"per request: {found['server_counters']}"
        )

    def _is_profiled(self, concurrency: int, opts: Options) -> bool:
        return (
            opts.profile is not None
            and self.name == "ours"
            and concurrency == max(opts.concurrency)
        )

    def _profiled(
        self, operation: str, concurrency: int, opts: Options
    ) -> contextlib.AbstractContextManager[None]:
        if not self._is_profiled(concurrency, opts) or self.cpu.root is None:
            return contextlib.nullcontext()
        assert opts.profile is not None
        return profiling.recording(self.cpu.root, opts.profile / f"{operation}.txt")

    def _count_models(self, operation: str, stats: LoopStats) -> None:
        if operation == "create_model":
            self.models_created += stats.ok

    async def top_up_models(self, target: int) -> None:
        """Create models, unmeasured, until the registry holds ``target``."""
        missing = target - self.models_created
        if missing <= 0:
            return
        workload = await self.registry.workload("create_model", 32)
        stats = await run_loop(
            self.registry.http,
            workload.make("fill"),
            requests=missing,
            concurrency=32,
            max_seconds=TOP_UP_SECONDS,
        )
        self.models_created += stats.ok
        log(f"{self.name:<6} now holds about {self.models_created} models")


def _per_request(counts: Counter[str], requests: int) -> dict[str, float]:
    """Counts per request, with the commands summed as ``commands``."""
    if not counts or not requests:
        return {}
    per = {key: round(n / requests, 2) for key, n in sorted(counts.items())}
    commands = sum(n for key, n in counts.items() if key.startswith("command "))
    return {"commands": round(commands / requests, 2), **per}


# Phases ------------------------------------------------------------------------


async def measure_operations(subjects: list[Subject], opts: Options) -> None:
    """Every operation at every concurrency, alternating between registries
    so that noise from other work on the machine hits both alike."""
    for operation in opts.operations:
        if operation == "list_models":
            for subject in subjects:
                await subject.top_up_models(opts.list_models)
        for concurrency in opts.concurrency:
            for subject in subjects:
                await subject.measure(operation, concurrency, opts)


async def race_promotions(subjects: list[Subject], rounds: int) -> dict[str, Any]:
    """16 concurrent promotions on a model with 16 versions, several rounds."""
    races: dict[str, Any] = {}
    for subject in subjects:
        races[subject.name] = [
            await subject.registry.race_round(16, round_) for round_ in range(rounds)
        ]
    return races


async def measure_memory(server: OurServer, opts: Options) -> dict[str, Any]:
    """A large upload and download through our server, with its RSS."""
    http = Http(server.url, 4)
    try:
        registry = OurRegistry(http, uuid.uuid4().hex[:8])
        await registry.prepare()
    finally:
        await http.close()
    return await memory.measure(
        server.url,
        registry.experiment_id,
        opts.upload_mib * 2**20,
        server.server_pids,
        server.store_pids,
    )


# This machine's other tenants come and go within seconds: the floor and
# ours are measured in turn, round after round, and the round of median
# share is reported (with every round's share beside it). Of three rounds
# one burst in two could decide the median; single rounds have ranged from
# 43% to 75%.
FLOOR_ROUNDS = 5
# A GET loop of the other operations' length lasts under a second here: too
# short to average out a neighbour's burst.
FLOOR_REQUESTS = 5


async def measure_floor(work: Path, opts: Options) -> dict[str, Any]:
    """A bare aiohttp handler against our GET by id with the store's cost
    taken out: one process each, ours on an in-memory store inside it."""
    concurrency = max(opts.concurrency)
    rounds: list[tuple[float, dict[str, Any], dict[str, Any]]] = []
    with contextlib.ExitStack() as stack:
        bare = FloorServer(work / "floor.log")
        stack.callback(bare.stop)
        bare.start()
        ours = MemoryServer(work / "floor-ours.log")
        stack.callback(ours.stop)
        ours.start()

        subject = await _subject(ours, "ours")
        try:
            workload = await subject.registry.workload("get_version", concurrency)
            for number in range(1, FLOOR_ROUNDS + 1):
                bare_stats = await _measure_bare(bare, concurrency, opts)
                ours_stats = await _measure_ours(subject, workload, concurrency, opts)
                share = ours_stats.rps / bare_stats.rps
                log(
                    f"floor  round {number}: bare aiohttp c={concurrency} "
                    f"{bare_stats.rps:.1f} req/s, ours {ours_stats.rps:.1f}: "
                    f"{share:.0%}"
                )
                rounds.append((share, bare_stats.to_json(), ours_stats.to_json()))
        finally:
            await subject.registry.http.close()
    share, bare_found, ours_found = sorted(rounds, key=lambda r: r[0])[len(rounds) // 2]
    return {
        "concurrency": concurrency,
        "store": "an in-memory store in the server's one process (mongomock-motor)",
        "bare": bare_found,
        "ours": ours_found,
        "share": round(share, 3),
        "round_shares": [round(r[0], 3) for r in rounds],
    }


async def _measure_bare(
    bare: FloorServer, concurrency: int, opts: Options
) -> LoopStats:
    # The floor answers about twice as fast as our GET: three times the
    # requests keep its loop at least as long.
    hello = Request("GET", "/hello")
    http = Http(bare.url, concurrency)
    try:
        await run_loop(
            http,
            lambda i: hello,
            requests=opts.warmup * FLOOR_REQUESTS * 3,
            concurrency=concurrency,
            max_seconds=opts.max_seconds,
        )
        return await run_loop(
            http,
            lambda i: hello,
            requests=opts.requests * FLOOR_REQUESTS * 3,
            concurrency=concurrency,
            max_seconds=opts.max_seconds,
            cpu=CpuMeter(bare.pid),
        )
    finally:
        await http.close()


async def _measure_ours(
    subject: Subject, workload: Workload, concurrency: int, opts: Options
) -> LoopStats:
    http = subject.registry.http
    await run_loop(
        http,
        workload.make("w"),
        requests=opts.warmup * FLOOR_REQUESTS,
        concurrency=concurrency,
        max_seconds=opts.max_seconds,
    )
    return await run_loop(
        http,
        workload.make(""),
        requests=opts.requests * FLOOR_REQUESTS,
        concurrency=concurrency,
        max_seconds=opts.max_seconds,
        cpu=subject.cpu,
    )


async def _subject(
    server: OurServer | MlflowServer | MemoryServer, name: str
) -> Subject:
    http = Http(server.url, 64)
    tag = uuid.uuid4().hex[:8]
    registry: Registry = (
        OurRegistry(http, tag) if name == "ours" else MlflowRegistry(http, tag)
    )
    await registry.prepare()
    return Subject(registry, CpuMeter(server.pid), server)


# One run ------------------------------------------------------------------------


async def one_run(work: Path, run: int, opts: Options, last: bool) -> dict[str, Any]:
    """Fresh servers, the operations on both, and on the last run the checks."""
    found: dict[str, Any] = {}
    with _servers(work / f"run{run}", opts) as (ours_server, mlflow_server):
        subjects = [await _subject(ours_server, "ours")]
        if mlflow_server is not None:
            subjects.append(await _subject(mlflow_server, "mlflow"))
            found["mlflow_server"] = mlflow_server.started_line
        try:
            await measure_operations(subjects, opts)
            found["operations"] = {s.name: s.results for s in subjects}
            if last and opts.race_rounds:
                found["races"] = await race_promotions(subjects, opts.race_rounds)
        finally:
            for subject in subjects:
                await subject.registry.http.close()
        if mlflow_server is not None:
            mlflow_server.stop()  # frees its cores before the memory check
        if last and not opts.skip_memory:
            log(f"memory: {opts.upload_mib} MiB up and down")
            found["memory"] = await measure_memory(ours_server, opts)
    return found


@contextlib.contextmanager
def _servers(
    work: Path, opts: Options
) -> Iterator[tuple[OurServer, MlflowServer | None]]:
    with contextlib.ExitStack() as stack:
        ours = OurServer(work / "ours", workers=opts.workers)
        stack.callback(ours.stop)
        log(f"starting our server on {ours.url} (workers: {opts.workers or 'default'})")
        ours.start()
        mlflow = None
        if not opts.skip_mlflow:
            mlflow = MlflowServer(
                work / "mlflow", opts.mlflow_baseline, opts.mlflow_venv
            )
            stack.callback(mlflow.stop)
            log(f"starting MLflow on {mlflow.url} (sqlite, default workers)")
            mlflow.start()
        yield ours, mlflow


# The whole benchmark ------------------------------------------------------------


async def benchmark(work: Path, opts: Options) -> dict[str, Any]:
    """Every run, then the floor; everything measured, as plain data."""
    result: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    runs = []
    for run in range(opts.runs):
        runs.append(await one_run(work, run, opts, last=run == opts.runs - 1))
    result["runs"] = runs
    if not opts.skip_floor:
        log("floor: bare aiohttp against our GET by id on a memory-backed store")
        result["floor"] = await measure_floor(work, opts)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return result


def summarize(result: dict[str, Any], opts: Options) -> None:
    """Medians over runs, verdicts, and the tables on stdout."""
    per_run = [run["operations"] for run in result["runs"]]
    ours = report.median_of_runs([run["ours"] for run in per_run])
    recorded = opts.skip_mlflow
    mlflow = (
        report.RECORDED_MLFLOW
        if recorded
        else report.median_of_runs([run["mlflow"] for run in per_run])
    )
    result["summary"] = {
        "ours": ours,
        "mlflow": mlflow,
        "mlflow_recorded": recorded,
        "verdicts": report.verdicts(ours, mlflow),
    }
    print(f"\nOperations (median of {opts.runs} run(s), times in ms)")
    print(report.operations_table(ours, mlflow, recorded))
    last = result["runs"][-1]
    if "races" in last:
        print("\nRacing promotions")
        print("\n".join(report.race_lines(last["races"])))
    if "floor" in result:
        print("\nFloor")
        print(report.floor_line(result["floor"]))
    if "memory" in last:
        print("\nMemory")
        print("\n".join(report.memory_lines(last["memory"])))


def _machine(opts: Options) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "workers": opts.workers or "default",
        "options": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in vars(opts).items()
        },
    }


def _save(result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    return path


def _stop_on_sigterm() -> None:
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the servers.
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str]) -> int:
    """Run the benchmark, print the tables, save the JSON."""
    opts = parse_options(argv)
    _stop_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="deardiary-bench-"))
    machine = _machine(opts)
    try:
        result = asyncio.run(benchmark(work, opts))
    finally:
        if opts.keep:
            log(f"data and logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    result["machine"] = machine | {"loadavg_after": os.getloadavg()}
    summarize(result, opts)
    print(f"\nsaved {_save(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
