"""The Kubernetes spawner's start of one compute service (kriging): claiming a warm pool pod
against creating a pod of its own, in the same run, alternately.

There is no cluster here: the API is the tests' fake transport and the "kubelet" runs each pod
as a real `twinstack serve` process on a loopback address of its own
(tests/integration/test_kube_warm_pool.py). What is timed is `KubernetesSpawner.start()` until
it returns the endpoint: for a claim, the label patch, the claim over mutual TLS and the
service starting with its session's identity; for a pod of its own, a new interpreter
importing and starting, seen ready by the stand-in kubelet's probe (every 50 ms; a real
kubelet probes every 2 s, and schedules, creates the container and its volumes first, none of
which a claim waits for).

    .venv/bin/python benchmarks/kube_pool.py [--runs 8] > kube_pool.json
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks, tests

from benchmarks.timing import machine
from tests.conftest import Pki
from tests.integration.test_kube_warm_pool import ProcessKubelet, spec_of, waiting
from tests.unit.kube_api_fake import fake_kube_api
from tests.unit.test_kubernetes_spawner import SETTINGS
from tests.unit.test_pod_reflector import reflecting
from twinstack.pki.tls import client_context
from twinstack.spawners.kube_pool import PodPool, pool_identity
from twinstack.spawners.kubernetes import KubernetesSpawner


def summary(samples: list[float]) -> dict[str, Any]:
    return {"median_ms": round(statistics.median(samples) * 1000, 1),
            "min_ms": round(min(samples) * 1000, 1), "max_ms": round(max(samples) * 1000, 1),
            "samples_ms": [round(s * 1000, 1) for s in samples]}


async def measure(runs: int, folder: Path) -> dict[str, list[float]]:
    pki = Pki(folder / "pki")
    times: dict[str, list[float]] = {"claimed_pool_pod": [], "pod_of_its_own": []}
    async with fake_kube_api() as (fake, core), reflecting(core) as reflector:
        kubelet = ProcessKubelet(fake, folder / "node")
        pool = PodPool(SETTINGS, core, reflector, 1, ("kriging",),
                       identity=functools.partial(pool_identity, pki.dir, pki.ca, 1.0),
                       client_tls=client_context(pki.identity("lss")))
        filler = asyncio.create_task(pool.run())
        try:
            for run in range(runs):
                for kind in times:
                    await reflector.wait(lambda: len(waiting(reflector)) == 1, 120)
                    session = f"{run:02d}{kind[0]}".ljust(32, "0")
                    spawner = KubernetesSpawner(spec_of(pki, folder, session), SETTINGS, core,
                                                reflector,
                                                pool if kind == "claimed_pool_pod" else None)
                    started = time.perf_counter()
                    await spawner.start(timeout=120)
                    times[kind].append(time.perf_counter() - started)
                    await spawner.stop()
                    while len(kubelet.tasks) > len(fake.objects["pods"]):  # still exiting:
                        await asyncio.sleep(0.05)  # not beside the next start
                    print(f"run {run + 1}/{runs} {kind}: {times[kind][-1] * 1000:.1f} ms",
                          file=sys.stderr)
        finally:
            filler.cancel()
            await kubelet.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        times = asyncio.run(measure(args.runs, Path(folder)))
    result = {"runs": args.runs, "service": "kriging", "machine": machine(),
              **{kind: summary(samples) for kind, samples in times.items()}}
    result["ratio_median"] = round(result["pod_of_its_own"]["median_ms"]
                                   / result["claimed_pool_pod"]["median_ms"], 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
