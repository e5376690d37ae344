"""The bounded load loop both registries are driven with, and its numbers.

Every loop stops at a request count and at a time limit, whichever comes
first, and both are capped again here so that no argument can make a loop
unbounded. Latencies count every completed request whatever its status;
percentiles are nearest-rank.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from procs import CpuMeter

HARD_MAX_REQUESTS = 200_000
HARD_MAX_SECONDS = 300.0
REQUEST_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Request:
    """One HTTP request of a load loop."""

    method: str
    path: str
    json: Any = None
    params: dict[str, str] | None = None


# Builds the i-th request of a loop.
RequestMaker = Callable[[int], Request]


@dataclass
class LoopStats:
    """What one bounded loop measured."""

    concurrency: int
    requests: int
    ok: int
    elapsed_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    stopped_by: str
    statuses: dict[str, int]
    errors: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The stats as plain data."""
        return asdict(self)


# How long an idle connection is kept for the next request: less than any
# server's own idle timeout (uvicorn, which serves MLflow, closes one after
# 5 s). A connection reused as the server closes it is reset, and a setup
# request that fails so ends the run.
IDLE_KEPT_S = 2.0


class Http:
    """An aiohttp session on one base URL that never raises on a request."""

    def __init__(self, base_url: str, connections: int) -> None:
        self.base = base_url.rstrip("/")
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=connections, keepalive_timeout=IDLE_KEPT_S
            ),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        )

    async def close(self) -> None:
        """Close the session and its connections."""
        await self.session.close()

    async def call(self, request: Request) -> tuple[int | str, bytes]:
        """The status and body; the status is ``EXC:<type>`` on a client error."""
        try:
            async with self.session.request(
                request.method,
                self.base + request.path,
                json=request.json,
                params=request.params,
            ) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"EXC:{type(exc).__name__}", str(exc).encode()

    async def ok(self, request: Request) -> Any:
        """The JSON answer of a request that must succeed."""
        status, body = await self.call(request)
        if status not in (200, 201):
            raise RuntimeError(
                f"{request.method} {request.path} -> {status}: {body[:300]!r}"
            )
        return json.loads(body) if body else {}


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of sorted values; 0 for none."""
    if not ordered:
        return 0.0
    rank = math.ceil(p / 100 * len(ordered)) - 1
    return ordered[max(0, min(len(ordered) - 1, rank))]


def _error_key(status: int | str, body: bytes) -> str:
    try:
        payload = json.loads(body)
        detail = payload.get("code") or payload.get("error_code") or ""
        message = str(payload.get("message", ""))
    except (ValueError, AttributeError):
        detail, message = "", body[:120].decode("utf-8", "replace")
    return f"{status} {detail} {' '.join(message.split())[:100]}".strip()


async def run_loop(
    http: Http,
    make: RequestMaker,
    *,
    requests: int,
    concurrency: int,
    max_seconds: float,
    cpu: CpuMeter | None = None,
) -> LoopStats:
    """Send up to ``requests`` requests for up to ``max_seconds`` seconds."""
    requests = min(requests, HARD_MAX_REQUESTS)
    deadline = time.perf_counter() + min(max_seconds, HARD_MAX_SECONDS)
    issued = 0
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()

    async def worker() -> None:
        nonlocal issued
        while issued < requests and time.perf_counter() < deadline:
            request = make(issued)
            issued += 1
            started = time.perf_counter()
            status, body = await http.call(request)
            latencies.append(time.perf_counter() - started)
            statuses[str(status)] += 1
            if status not in (200, 201):
                errors[_error_key(status, body)] += 1

    snapshot = cpu.snapshot() if cpu else None
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    usage = cpu.since(snapshot, elapsed) if cpu and snapshot else {}
    return _stats(concurrency, requests, elapsed, latencies, statuses, errors, usage)


def _stats(
    concurrency: int,
    requests: int,
    elapsed: float,
    latencies: list[float],
    statuses: Counter[str],
    errors: Counter[str],
    cpu: dict[str, Any],
) -> LoopStats:
    latencies.sort()
    done = len(latencies)
    ok = statuses["200"] + statuses["201"]
    return LoopStats(
        concurrency=concurrency,
        requests=done,
        ok=ok,
        elapsed_s=round(elapsed, 3),
        rps=round(done / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=round(percentile(latencies, 50) * 1000, 2),
        p99_ms=round(percentile(latencies, 99) * 1000, 2),
        max_ms=round((latencies[-1] if latencies else 0.0) * 1000, 2),
        stopped_by="count" if done >= requests else "time",
        statuses=dict(statuses),
        errors=dict(errors.most_common(5)),
        cpu=cpu,
    )


async def fire_together(http: Http, requests: list[Request]) -> list[int | str]:
    """Send every request at the same moment; their statuses, in order."""
    gate = asyncio.Event()

    async def one(request: Request) -> int | str:
        await gate.wait()
        status, _ = await http.call(request)
        return status

    tasks = [asyncio.create_task(one(request)) for request in requests]
    await asyncio.sleep(0.05)  # every task is parked on the gate by now
    gate.set()
    return list(await asyncio.gather(*tasks))
