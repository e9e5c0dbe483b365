"""Timing helpers shared by the benchmarks. Figures are medians of rounds."""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

#: The PostgreSQL server the benchmarks create their databases on.
ADMIN_DSN = os.environ.get("ORCHESTRATOR_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class Row:
    operation: str
    package: str
    baseline: str
    ratio: float
    target: str
    ok: bool


async def median_seconds(
    run: Callable[[], Awaitable[None]],
    *,
    rounds: int,
    setup: Callable[[], Awaitable[None]] | None = None,
) -> float:
    """Median wall time of ``run`` over ``rounds`` (``setup`` is not timed).

    Each round starts after a full garbage collection, so that a round does
    not pay for the collection owed by objects the setup (or an earlier
    round) created. The collector stays on while the round runs.
    """
    times = []
    for _ in range(rounds):
        if setup is not None:
            await setup()
        gc.collect()
        started = time.perf_counter()
        await run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def interleaved_medians(
    runs: dict[str, Callable[[], Awaitable[None]]], *, rounds: int
) -> dict[str, float]:
    """Median wall time of each of ``runs``, timed in turn within each round.

    A slow spell on a shared machine then slows a round of every run alike
    instead of the one run that happened to be timed during it, so the
    ratios between runs hold steadier than with one run's rounds after another.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            gc.collect()
            started = time.perf_counter()
            await run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(spent) for name, spent in times.items()}


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    header = ("operation", "package", "baseline", "ratio", "target", "")
    widths = [44, 22, 34, 8, 16, 4]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        cells = (
            row.operation,
            row.package,
            row.baseline,
            f"{row.ratio:.2f}x",
            row.target,
            "ok" if row.ok else "MISS",
        )
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))


async def pg_admin(statement: str) -> None:
    """Run a maintenance statement (CREATE/DROP DATABASE, CHECKPOINT)."""
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()
