"""Timing one operation, the same way in every benchmark script."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def milliseconds(fn: Callable[[], Any], repeats: int, *, warm_up: bool = True
                 ) -> dict[str, float]:
    """Median, 95th percentile, min and max of `repeats` calls of `fn`, in ms; after one
    untimed call first (`warm_up`: libraries loaded, caches filled)."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 3),
            "p95_ms": round(times[int(0.95 * (len(times) - 1))], 3),
            "min_ms": round(times[0], 3), "max_ms": round(times[-1], 3)}
