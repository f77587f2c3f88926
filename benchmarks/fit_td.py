"""FIT-TD speed: cell-updates per second of `sim.fit_td` on vacuum grids, beside this machine's
memory bandwidth (a STREAM-like triad and an in-place update, numba, all cores), and the bytes
per cell-update the rate implies at that bandwidth.

Prints JSON. The peers the issue names (gprMax, openEMS on the same problem in the same run)
and the cases with materials and CPML are not measured yet: the solver does not have them yet.
Run: `.venv/bin/python benchmarks/fit_td.py [--sizes 100 200] [--steps 40]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numba
import numpy as np
from numba import prange

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import machine

from twinstack.sim.fit_td import EdgeSource, GaussianPulse, Simulation, YeeGrid

BANDWIDTH_BYTES = 3 * 2**26 * 4  # three float32 arrays of 256 MiB in all: far beyond the caches


@numba.njit(parallel=True, cache=True)
def _triad(a: np.ndarray, b: np.ndarray, c: np.ndarray, s: float) -> None:
    for i in prange(a.size):
        a[i] = b[i] + s * c[i]


@numba.njit(parallel=True, cache=True)
def _update(a: np.ndarray, b: np.ndarray, s: float) -> None:
    for i in prange(a.size):
        a[i] += s * b[i]


def bandwidth(repeats: int = 10) -> dict[str, float]:
    """GB/s of the best of `repeats`: triad (2 reads, 1 write) and in-place (2 reads, 1 write
    to a line already read)."""
    n = BANDWIDTH_BYTES // 12
    a, b, c = (np.ones(n, np.float32) for _ in range(3))
    s = np.float32(0.5)
    _triad(a, b, c, s)
    _update(a, b, s)
    best = {"triad": np.inf, "in_place": np.inf}
    for _ in range(repeats):
        started = time.perf_counter()
        _triad(a, b, c, s)
        best["triad"] = min(best["triad"], time.perf_counter() - started)
        started = time.perf_counter()
        _update(a, b, s)
        best["in_place"] = min(best["in_place"], time.perf_counter() - started)
    return {"triad_gb_s": round(3 * 4 * n / best["triad"] / 1e9, 2),
            "in_place_gb_s": round(3 * 4 * n / best["in_place"] / 1e9, 2)}


def vacuum_rate(size: int, steps: int, repeats: int = 3) -> float:
    """Cell-updates per second (best of `repeats` runs of `steps`) on a size^3 PEC box."""
    grid = YeeGrid.uniform((1.0, 1.0, 1.0), 1.0 / size)
    sim = Simulation(grid, sources=[EdgeSource("ez", (0.5, 0.5, 0.5),
                                               GaussianPulse.up_to(3e9))])
    sim.run(2)  # compiled and paged in
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        sim.run(steps)
        best = min(best, time.perf_counter() - started)
    return grid.cells * steps / best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    memory = bandwidth()
    cases = {}
    for size in args.sizes:
        rate = vacuum_rate(size, args.steps)
        cases[f"vacuum_{size}"] = {
            "cells": size**3, "float": "float32", "threads": numba.get_num_threads(),
            "cell_updates_per_s": round(rate / 1e6, 1) * 1e6,
            "implied_bytes_per_cell_update": round(memory["triad_gb_s"] * 1e9 / rate, 1)}
    print(json.dumps({"machine": machine(numba=numba.__version__), "memory": memory,
                      "twinstack": cases, "peers": "gprMax and openEMS: not yet measured"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
