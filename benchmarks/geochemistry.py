"""PHREEQC speciations per second: through the platform (a batch in one `speciate` call from the
Python client: relay, phreeqc service, its worker process, a result entity committed) beside
calling PHREEQC directly in the same run: the `phreeqc` package (IPhreeqc, one input of a
SOLUTION per sample, the way the service's worker builds it) and `phreeqpython` (one
`add_solution` and its SIs per sample).

The samples: groundwater over a 1 km square (pH, temperature, Ca, Mg, Na, K, Cl, alkalinity,
sulfate), four saturation indices each, phreeqc.dat. `ratio` is the service's rate over each
direct one (goal: >= 0.8). Needs phreeqpython (`pip install -e '.[bench]'`).

    .venv/bin/python benchmarks/geochemistry.py [--samples 1000] [--repeats 5] > geochemistry.json

(Not named phreeqc.py: run as a script, it would shadow the phreeqc package.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' platform helpers

from benchmarks.timing import machine
from tests.geochem_samples import samples_csv
from tests.platform_fixtures import running_platform
from twinstack.services.phreeqc import SpeciateParams, _samples
from twinstack.sim import geochem

PHASES = ["Calcite", "Dolomite", "Gypsum", "Halite"]


def best_rate(count: int, fn: Callable[[], Any], repeats: int) -> float:
    """Speciations per second, the best of `repeats` (after one untimed call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return count / best


def phreeqpython_batch(samples: list[dict[str, Any]]) -> Callable[[], Any]:
    import phreeqpython

    pp = phreeqpython.PhreeqPython(database="phreeqc.dat")

    def run() -> None:
        for sample in samples:
            given = {k: v for k, v in sample.items() if k not in ("name", "x", "y")}
            given["Alkalinity"] = f"{given['Alkalinity']} as HCO3"
            solution = pp.add_solution(given)
            _ = [solution.si(phase) for phase in PHASES], solution.I
            solution.forget()
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    csv = samples_csv(args.samples)
    samples = _samples(SpeciateParams(csv=csv))
    engine = geochem.Engine(geochem.built_in_text("phreeqc.dat"))
    direct = {"phreeqc": best_rate(args.samples, lambda: geochem.speciate(engine, samples,
                                                                          PHASES),
                                   args.repeats),
              "phreeqpython": best_rate(args.samples, phreeqpython_batch(samples),
                                        args.repeats)}
    with tempfile.TemporaryDirectory() as tmp, running_platform(Path(tmp), "ada") as platform:
        tw = platform.client("ada")
        with tw.open_session(tw.create_project("bench", "geochemistry")["id"]) as session:
            service = best_rate(args.samples, lambda: session.geochemistry.speciate(
                csv=csv, phases=PHASES), args.repeats)
    print(json.dumps({
        "machine": machine(phreeqc=geochem.version()), "samples": args.samples,
        "speciations_per_s": {"service": round(service), **{k: round(v) for k, v in
                                                          direct.items()}},
        "ratio": {name: round(service / rate, 2) for name, rate in direct.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
