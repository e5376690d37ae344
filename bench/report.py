"""The targets of issue #7, the verdicts, and the printed tables."""

from __future__ import annotations

import statistics
from typing import Any

from registries import LABELS, OPERATIONS

THROUGHPUT_RATIO = 3.0  # ours / MLflow req/s at c=32, at least
P99_RATIO = 1 / 3  # ours / MLflow p99 at c=32, at most
FLOOR_SHARE = 0.5  # our GET by id / a bare aiohttp handler, at least
RSS_DELTA_MIB = 64.0  # RSS a 1 GB upload or download may add, less than
TARGET_CONCURRENCY = 32

# MLflow 3.17.2 on this kind of machine (sqlite, its default 4 workers,
# median of 3 runs), as the issue records it; used with --skip-mlflow.
RECORDED_MLFLOW: dict[str, dict[int, dict[str, float]]] = {
    "create_model": {1: {"rps": 145}, 32: {"rps": 171, "p99_ms": 2200}},
    "register_version": {1: {"rps": 70}, 32: {"rps": 77, "p99_ms": 3300}},
    "get_version": {1: {"rps": 111}, 32: {"rps": 218, "p99_ms": 680}},
    "promote": {1: {"rps": 93}, 32: {"rps": 107, "p99_ms": 3000}},
    "list_models": {1: {"rps": 23}, 32: {"rps": 40, "p99_ms": 2700}},
}

Summary = dict[str, dict[int, dict[str, Any]]]


def median_of_runs(runs: list[dict[str, dict[int, dict[str, Any]]]]) -> Summary:
    """Per operation and concurrency: the median req/s, p50 and p99 of runs."""
    summary: Summary = {}
    for operation in OPERATIONS:
        for concurrency in sorted({c for run in runs for c in run.get(operation, {})}):
            stats = [run[operation][concurrency] for run in runs]
            summary.setdefault(operation, {})[concurrency] = {
                key: statistics.median(s[key] for s in stats)
                for key in ("rps", "p50_ms", "p99_ms")
            } | {
                "non_ok": sum(s["requests"] - s["ok"] for s in stats),
                "runs": len(stats),
            }
    return summary


def verdicts(ours: Summary, mlflow: Summary) -> dict[str, dict[str, Any]]:
    """The c=32 ratios of each operation and whether they meet the targets."""
    found = {}
    for operation in OPERATIONS:
        mine = ours.get(operation, {}).get(TARGET_CONCURRENCY)
        theirs = mlflow.get(operation, {}).get(TARGET_CONCURRENCY)
        if not mine or not theirs:
            continue
        throughput = mine["rps"] / theirs["rps"]
        p99 = mine["p99_ms"] / theirs["p99_ms"]
        found[operation] = {
            "throughput_ratio": round(throughput, 2),
            "p99_ratio": round(p99, 3),
            "throughput_met": throughput >= THROUGHPUT_RATIO,
            "p99_met": p99 <= P99_RATIO,
        }
    return found


def _number(value: float | None, width: int) -> str:
    if value is None:
        return "-".rjust(width)
    return f"{value:{width}.1f}" if value < 1000 else f"{value:{width}.0f}"


def operations_table(ours: Summary, mlflow: Summary, recorded: bool) -> str:
    """Req/s, p50 and p99 side by side, with the ratios and the verdicts."""
    who = "MLflow (recorded)" if recorded else "MLflow"
    lines = [
        f"{'operation':<40} {'c':>3} | {'ours req/s':>10} {'p50 ms':>7} "
        f"{'p99 ms':>7} | {who + ' req/s':>13} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'req/s x':>7} {'p99 x':>6} | target at c=32",
    ]
    found = verdicts(ours, mlflow)
    for operation in OPERATIONS:
        for concurrency, mine in sorted(ours.get(operation, {}).items()):
            theirs = mlflow.get(operation, {}).get(concurrency, {})
            lines.append(
                _row(operation, concurrency, mine, theirs, found.get(operation))
            )
    return "\n".join(lines)


def _row(
    operation: str,
    concurrency: int,
    mine: dict[str, Any],
    theirs: dict[str, Any],
    verdict: dict[str, Any] | None,
) -> str:
    label = LABELS[operation] if concurrency == 1 else ""
    throughput = mine["rps"] / theirs["rps"] if theirs.get("rps") else None
    p99 = mine["p99_ms"] / theirs["p99_ms"] if theirs.get("p99_ms") else None
    ratios = (
        f"{'-' if throughput is None else f'{throughput:.1f}x':>7} "
        f"{'-' if p99 is None else f'{p99:.2f}':>6}"
    )
    target = ""
    if concurrency == TARGET_CONCURRENCY and verdict:
        target = (
            f"req/s {'PASS' if verdict['throughput_met'] else 'MISS'}, "
            f"p99 {'PASS' if verdict['p99_met'] else 'MISS'}"
        )
    errors = f"  ({mine['non_ok']} non-2xx)" if mine.get("non_ok") else ""
    return (
        f"{label:<40} {concurrency:>3} | {_number(mine['rps'], 10)} "
        f"{_number(mine['p50_ms'], 7)} {_number(mine['p99_ms'], 7)} | "
        f"{_number(theirs.get('rps'), 13)} {_number(theirs.get('p50_ms'), 7)} "
        f"{_number(theirs.get('p99_ms'), 7)} | {ratios} | {target}{errors}"
    )


def race_lines(races: dict[str, list[dict[str, Any]]]) -> list[str]:
    """How many PRODUCTION versions each registry left after racing promotions."""
    lines = []
    for name, rounds in races.items():
        left = [r["production_versions"] for r in rounds]
        statuses: dict[str, int] = {}
        for r in rounds:
            for status, count in r["statuses"].items():
                statuses[status] = statuses.get(status, 0) + count
        verdict = "PASS" if all(n == 1 for n in left) else "FAIL"
        lines.append(
            f"{name:<7} {len(rounds)} rounds x {rounds[0]['requests']} promotions: "
            f"PRODUCTION versions left per round {left} -> {verdict}; "
            f"answers {statuses}"
        )
    return lines


def floor_line(floor: dict[str, Any]) -> str:
    """Our GET by id on a memory-backed store against the bare handler."""
    share = floor["ours"]["rps"] / floor["bare"]["rps"]
    verdict = "PASS" if share >= FLOOR_SHARE else "MISS"
    rounds = ", ".join(f"{s:.0%}" for s in floor.get("round_shares", [share]))
    return (
        f"c={floor['concurrency']}: bare aiohttp {floor['bare']['rps']:.0f} req/s "
        f"(p99 {floor['bare']['p99_ms']:.1f} ms); our GET by id on "
        f"{floor['store']} {floor['ours']['rps']:.0f} req/s "
        f"(p99 {floor['ours']['p99_ms']:.1f} ms) = {share:.0%} of the floor, "
        f"the median round of {rounds} (target >= {FLOOR_SHARE:.0%}) -> {verdict}"
    )


def memory_lines(memory: dict[str, Any]) -> list[str]:
    """What a large upload and download added to the server's RSS."""
    lines = []
    mib = memory["bytes"] / 2**20
    for trip in ("upload", "download"):
        found = memory[trip]
        delta = max(found["rss_delta_mib"], found["hwm_delta_mib"] or 0.0)
        verdict = "PASS" if delta < RSS_DELTA_MIB else "MISS"
        lines.append(
            f"{trip:<8} {mib:.0f} MiB in {found['seconds']} s: server RSS "
            f"{found['rss_before_mib']} MiB -> peak {found['rss_peak_mib']} MiB "
            f"(+{found['rss_delta_mib']} MiB sampled, +{found['hwm_delta_mib']} "
            f"MiB by VmHWM; target < {RSS_DELTA_MIB:.0f}) -> {verdict}; "
            f"store +{found['store_rss_delta_mib']} MiB"
        )
    lines.append(f"bytes intact after the round trip: {memory['round_trip_intact']}")
    return lines
