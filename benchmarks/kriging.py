"""Ordinary kriging, TwinStack's numerics (sim/kriging.py) beside PyKrige on the same data, in the
same run, interleaved round by round: a global solve (every target uses every point) and a
local one (each target its 50 nearest points). PyKrige's faster backend for each mode is the
peer ("vectorized" or its compiled "C" loop for the global solve, "loop" or "C" for the local
one). `agreement` is the largest difference of the estimates over the largest estimate
(goal: <= 1e-9); `speedup` is PyKrige's time over ours (goal: >= 3).

    .venv/bin/python benchmarks/kriging.py [--repeats 5] > kriging.json
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.timing

from benchmarks.timing import interleaved, machine
from twinstack.sim.kriging import BLAS_THREADS, PARAMETERS, Variogram, ordinary_kriging

VARIOGRAM = Variogram("spherical", (1.0, 30.0, 0.01))
CASES = {  # points, grid targets per side, neighbours
    "global": (1_000, 100, None),
    "50 nearest": (5_000, 100, 50),
}


def data(n: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, 100, (n, 2))
    return points, np.sin(points[:, 0] / 15) + np.cos(points[:, 1] / 20) + rng.normal(0, 0.05, n)


def twinstack(points: np.ndarray, values: np.ndarray, targets: np.ndarray,
              neighbours: int | None) -> np.ndarray:
    return ordinary_kriging(points, values, targets, VARIOGRAM, neighbours=neighbours).estimates


def pykrige_runs(points: np.ndarray, values: np.ndarray, side: int, neighbours: int | None
                 ) -> dict[str, Any]:
    from pykrige.ok import OrdinaryKriging

    model = OrdinaryKriging(points[:, 0], points[:, 1], values, variogram_model=VARIOGRAM.model,
                            variogram_parameters=dict(zip(PARAMETERS[VARIOGRAM.model],
                                                          VARIOGRAM.params, strict=True)))
    axis = np.linspace(0, 100, side)
    backends = ("vectorized", "C") if neighbours is None else ("loop", "C")
    return {backend: (lambda b=backend: model.execute("grid", axis, axis, backend=b,
                                                      n_closest_points=neighbours)[0])
            for backend in backends}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    report: dict[str, Any] = {"machine": machine(blas_threads=BLAS_THREADS),
                              "variogram": VARIOGRAM.as_dict(), "cases": {}}
    for case, (n, side, neighbours) in CASES.items():
        points, values = data(n)
        axis = np.linspace(0, 100, side)
        targets = np.column_stack([g.ravel() for g in np.meshgrid(axis, axis)])
        runs = {"twinstack": partial(twinstack, points, values, targets, neighbours)}
        runs |= {f"pykrige {b}": fn for b, fn in pykrige_runs(points, values, side,
                                                             neighbours).items()}
        ours = runs["twinstack"]().reshape(side, side)
        agreement = {name: float(np.max(np.abs(fn() - ours)) / np.max(np.abs(ours)))
                     for name, fn in runs.items() if name != "twinstack"}
        timed = interleaved(runs, args.repeats)
        peer = min((name for name in runs if name != "twinstack"),
                   key=lambda name: timed[name]["median_ms"])
        report["cases"][case] = {
            "points": n, "targets": side * side, "neighbours": neighbours,
            "median_ms": {name: t["median_ms"] for name, t in timed.items()},
            "peer": peer, "agreement": agreement,
            "speedup": round(timed[peer]["median_ms"] / timed["twinstack"]["median_ms"], 2)}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
