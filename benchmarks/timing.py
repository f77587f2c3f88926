"""Timing one operation, the same way in every benchmark script."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any


def summary(times_ms: list[float]) -> dict[str, float]:
    """Median, 95th percentile, min and max, in ms."""
    times = sorted(times_ms)
    return {"median_ms": round(statistics.median(times), 3),
            "p95_ms": round(times[int(0.95 * (len(times) - 1))], 3),
            "min_ms": round(times[0], 3), "max_ms": round(times[-1], 3)}


def milliseconds(fn: Callable[[], Any], repeats: int, *, warm_up: bool = True
                 ) -> dict[str, float]:
    """`summary` of `repeats` calls of `fn`; after one untimed call first (`warm_up`:
    libraries loaded, caches filled)."""
    return interleaved({"fn": fn}, repeats, warm_up=warm_up)["fn"]


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, *, warm_up: bool = True
                ) -> dict[str, dict[str, float]]:
    """Each function once per round, in turn (so a busy spell on a shared machine hits all
    of them alike), after one untimed round: the `summary` of each."""
    if warm_up:
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: summary(ts) for name, ts in times.items()}


def machine(**versions: str) -> dict[str, Any]:
    """Where a benchmark ran: cores, Python, platform, load, and the libraries' versions."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_1m": os.getloadavg()[0], **versions}
