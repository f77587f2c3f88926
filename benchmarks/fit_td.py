"""FIT-TD speed: cell-updates per second of `sim.fit_td` beside openEMS and gprMax on the same
problems in the same run (fdtd_peers.py: vacuum in a PEC box; three lossy dielectric blocks
with an 8-cell CPML on every face), with this machine's memory bandwidth (a STREAM-like triad
and an in-place update, numba, all cores) and the bytes per cell-update our rate implies.

Prints JSON; `ratio` is ours over each peer's; `twinstack_gpu` the same problems on the GPU
backend where numba finds a GPU. Install the peers with
`scripts/benchmark-peers.sh`; without them each peer's entry says why it is missing.
Run: `.venv/bin/python benchmarks/fit_td.py [--sizes 100 200] [--steps 100] [--no-peers]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba import prange

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fdtd_peers import CASES, DX, F_SOURCE, PML_CELLS, dielectric_blocks, gprmax_rate, openems_rate
from timing import machine

from twinstack.sim.fit_td import EdgeSource, GaussianPulse, Material, Simulation, YeeGrid, gpu

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


def problem(size: int, case: str, backend: str = "cpu") -> Simulation:
    """The peers' problem (fdtd_peers.py): size^3 cells of 5 mm, a z-directed source at the
    centre; "vacuum" in a PEC box, "materials_cpml" with three blocks and an 8-cell CPML on
    every face."""
    grid = YeeGrid.uniform((size * DX,) * 3, DX)
    centre = (size // 2 * DX, size // 2 * DX, (size // 2 + 0.5) * DX)
    source = [EdgeSource("ez", centre, GaussianPulse.up_to(F_SOURCE))]
    if case == "vacuum":
        return Simulation(grid, sources=source, backend=backend)
    cells = np.zeros(grid.shape, np.uint8)
    table = [Material()]
    for n, (eps_r, sigma, (lo, hi)) in enumerate(dielectric_blocks(size), start=1):
        cells[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = n
        table.append(Material(eps_r, sigma))
    faces = {face: "pml" for face in ("x-", "x+", "y-", "y+", "z-", "z+")}
    return Simulation(grid, sources=source, materials=table, cells=cells, walls=faces,
                      pml_cells=PML_CELLS, backend=backend)


def rate(size: int, case: str, steps: int, repeats: int = 3, backend: str = "cpu") -> float:
    """Cell-updates per second (best of `repeats` runs of `steps`; on the GPU each run
    includes copying the fields back, as a run does)."""
    sim = problem(size, case, backend)
    sim.run(2)  # compiled and paged in
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        sim.run(steps)
        best = min(best, time.perf_counter() - started)
    return sim.grid.cells * steps / best


def peers(size: int, case: str, steps: int, threads: int) -> dict[str, Any]:
    """openEMS's and gprMax's rates on the same problem, or why there are none."""
    found: dict[str, Any] = {}
    for name, measure in (("openEMS", openems_rate), ("gprMax", gprmax_rate)):
        try:
            found[name] = measure(size, steps, case, threads)
        except (OSError, RuntimeError, subprocess.SubprocessError, ValueError) as exc:
            found[name] = {"error": f"{type(exc).__name__}: {exc} (install the peers with "
                                    "scripts/benchmark-peers.sh)"}
    return found


def on_gpu(args: argparse.Namespace) -> dict[str, Any]:
    """The same problems on the GPU backend (sim/fit_td/gpu.py), 10x the steps, or why not."""
    if not gpu.available():
        return {"error": "numba finds no CUDA GPU here"}
    return {f"{case}_{size}": {"cell_updates_per_s": round(rate(size, case, 10 * args.steps,
                                                                backend="gpu") / 1e6, 1) * 1e6}
            for size in args.sizes for case in args.cases}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args()
    memory = bandwidth()
    threads = numba.get_num_threads()
    cases = {}
    for size in args.sizes:
        for case in args.cases:
            ours = rate(size, case, args.steps)
            entry: dict[str, Any] = {
                "cells": size**3, "float": "float32", "threads": threads,
                "cell_updates_per_s": round(ours / 1e6, 1) * 1e6,
                "implied_bytes_per_cell_update": round(memory["triad_gb_s"] * 1e9 / ours, 1)}
            if not args.no_peers:
                entry["peers"] = peers(size, case, args.steps, threads)
                entry["ratio"] = {name: round(ours / found["cell_updates_per_s"], 2)
                                  for name, found in entry["peers"].items()
                                  if "cell_updates_per_s" in found}
            cases[f"{case}_{size}"] = entry
    print(json.dumps({"machine": machine(numba=numba.__version__), "memory": memory,
                      "twinstack": cases, "twinstack_gpu": on_gpu(args)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
