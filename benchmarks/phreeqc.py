"""PHREEQC speciations per second: through the platform (a batch in one `speciate` call from the
Python client: relay, phreeqc service, its worker process, a result entity committed) beside
calling PHREEQC directly in the same run: the `phreeqc` package (IPhreeqc, one input of a
SOLUTION per sample, the way the service's worker builds it) and `phreeqpython` (one
`add_solution` and its SIs per sample).

The samples: groundwater over a 1 km square (pH, temperature, Ca, Mg, Na, K, Cl, alkalinity,
sulfate), four saturation indices each, phreeqc.dat. The service runs twice: as configured by
default (a batch split between a worker process per core, up to 4) and with one worker
(TWINSTACK_COMPUTE_WORKERS=1), PHREEQC's own speed per core through the platform. `ratio` is
each of its rates over each direct one (goal: >= 0.8). Needs phreeqpython (`pip install -e
'.[bench]'`).

    .venv/bin/python benchmarks/phreeqc.py [--samples 1000] [--repeats 5] > phreeqc.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

# the repository instead of this folder, where this file would stand in for the phreeqc package
sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.timing import interleaved, machine
from tests.geochem_samples import samples_csv
from tests.platform_fixtures import running_platform
from twinstack.services.phreeqc import SpeciateParams, _samples
from twinstack.sim import geochem

PHASES = ["Calcite", "Dolomite", "Gypsum", "Halite"]


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
    direct = {"phreeqc": lambda: geochem.speciate(engine, samples, PHASES),
              "phreeqpython": phreeqpython_batch(samples)}
    found: dict[str, float] = {}
    ratio: dict[str, float] = {}
    for label, workers in (("service", None), ("service_1_worker", "1")):
        env = {"TWINSTACK_COMPUTE_WORKERS": workers} if workers else {}  # default: per core
        with tempfile.TemporaryDirectory() as tmp, \
                running_platform(Path(tmp), "ada", env=env) as platform:
            tw = platform.client("ada")
            with tw.open_session(tw.create_project("bench", "geochemistry")["id"]) as session:
                speciate = partial(session.geochemistry.speciate, csv=csv, phases=PHASES)
                timed = interleaved({label: speciate, **direct}, args.repeats)
                measured = {name: args.samples / (t["min_ms"] / 1000) for name, t in timed.items()}
        ratio |= {f"{label}/{name}": round(measured[label] / measured[name], 2)
                  for name in direct}
        found[label] = measured[label]
        for name in direct:
            found[name] = max(found.get(name, 0.0), measured[name])
    print(json.dumps({
        "machine": machine(phreeqc=geochem.version()), "samples": args.samples,
        "speciations_per_s": {k: round(v) for k, v in found.items()}, "ratio": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
