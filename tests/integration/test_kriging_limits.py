"""A real kriging service holds every call to its budget: the largest calls it accepts keep the
process's peak RSS under compute_memory_mb, and larger ones get 422 before anything is
allocated."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.conftest import Pki, ServiceProcess, Services
from twinstack.exitcodes import ExitCode
from twinstack.pki.tls import TlsFiles, client_context
from twinstack.services.kriging import MIB, NUMBA_BYTES, Budget, Size, largest
from twinstack.wire.client import ServiceClient
from twinstack.wire.errors import ActionError

SESSION = "s-limits"
README = {"points": [[0, 0], [1, 0], [0, 1], [1, 1]], "values": [1, 2, 3, 4],
          "grid": {"x": [0, 1, 11], "y": [0, 1, 11]}, "variogram": {"model": "spherical"}}
TARGETS = [[500.5, 500.5], [10.25, 990.75], [999.0, 0.5]]
# Above the idle process: caps small enough that the calls at them stay quick and their
# requests stay within the transport's body limit; with room for the neighbour mode's numba
# kernel, which it loads at its first call (NUMBA_BYTES).
SMALL_BUDGET_MB = 80 + NUMBA_BYTES // MIB


def call(service: ServiceProcess, relay: TlsFiles, action: str, params: dict[str, Any]) -> Any:
    async def go() -> Any:
        async with ServiceClient(service.url(), client_context(relay), timeout=300) as client:
            return await client.call(action, params)
    return asyncio.run(go())


def timed(service: ServiceProcess, relay: TlsFiles, what: str, params: dict[str, Any]) -> Any:
    started = time.perf_counter()
    result = call(service, relay, "interpolate", params)
    print(f"{what}: {time.perf_counter() - started:.1f} s, peak RSS so far "
          f"{peak_rss(service) / MIB:.0f} MB")
    return result


def refusal(service: ServiceProcess, relay: TlsFiles, params: dict[str, Any]) -> ActionError:
    with pytest.raises(ActionError) as refused:
        call(service, relay, "interpolate", params)
    return refused.value


def peak_rss(service: ServiceProcess) -> int:
    with open(f"/proc/{service.proc.pid}/status") as status:
        found = re.search(r"VmHWM:\s+(\d+) kB", status.read())
    assert found is not None
    return int(found.group(1)) * 1024


def scattered(n: int) -> dict[str, Any]:
    """n distinct points with a smooth field on them, as floats (the costly form to parse)."""
    rng = np.random.default_rng(n)
    points = rng.uniform(0, 1000, (n, 2))
    values = np.sin(points[:, 0] / 150) + np.cos(points[:, 1] / 200)
    return {"points": points.round(3).tolist(), "values": values.round(4).tolist()}


def compact(n: int) -> dict[str, Any]:
    """n distinct points on an integer lattice, integer values: the most points per byte."""
    side = math.isqrt(n - 1) + 1
    return {"points": [[i % side, i // side] for i in range(n)],
            "values": [(i % side + i // side) % 10 for i in range(n)]}


def budget_of(service: ServiceProcess, relay: TlsFiles) -> Budget:
    return Budget(**call(service, relay, "limits", {})["budget"])


def most_points(budget: Budget, neighbours: int | None, targets: int = len(TARGETS),
                grid_rows: int = 0) -> int:
    """The most points a call passes (the cap, by the service's own sizing functions and its
    measured idle size): a fitted variogram at a list of targets, or a grid of them."""
    listed = 0 if grid_rows else targets
    return largest(lambda n: budget.fits(Size(n, targets, grid_rows, listed, neighbours, True)),
                   3, 10**8)


def largest_square_grid(budget: Budget, points: int) -> int:
    return largest(lambda s: budget.fits(Size(points, s * s, s, 0, None, True)), 1, 10**5)


def start_kriging(services: Services, pki: Pki, *flags: str) -> ServiceProcess:
    return services.start("kriging", pki.identity("kriging", session=SESSION),
                          "--session", SESSION, *flags)


@pytest.fixture(scope="module")
def default_kriging(pki: Pki, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[ServiceProcess]:
    """One service on the default budget: compute_memory_mb 512, compute_work_gflop 200."""
    running = Services(tmp_path_factory.mktemp("kriging-default"))
    try:
        yield start_kriging(running, pki)
    finally:
        running.stop_all()


@pytest.fixture(scope="module")
def relay(pki: Pki) -> TlsFiles:
    return pki.identity("relay", session=SESSION)


def test_readme_example_fits_four_points_and_reproduces_them(default_kriging, relay):
    result = call(default_kriging, relay, "interpolate", README)
    estimates = np.array(result["estimates"])
    assert result["shape"] == [11, 11] and estimates.shape == (11, 11)
    corners = [estimates[0, 0], estimates[0, -1], estimates[-1, 0], estimates[-1, -1]]
    np.testing.assert_allclose(corners, [1, 2, 3, 4], atol=1e-9)
    assert estimates[5, 5] == pytest.approx(2.5, abs=1e-9)  # symmetric weights: the mean
    assert np.all((estimates > 1 - 1e-9) & (estimates < 4 + 1e-9))
    variances = np.array(result["variances"])
    assert variances[0, 0] == pytest.approx(0, abs=1e-9) and variances[5, 5] > 0
    assert result["variogram"]["model"] == "spherical" and result["variogram"]["range"] > 0


def test_default_budget_runs_the_largest_calls_and_refuses_larger_ones(default_kriging, relay):
    kriging = default_kriging
    budget = budget_of(kriging, relay)
    assert (budget.memory_mb, budget.work_gflop, budget.message_bytes) == (512, 200, 16 * MIB)

    few = scattered(50)  # global kriging of 50 points: the grid's cost is all in its reply
    side = largest_square_grid(budget, 50)
    grid = timed(kriging, relay, f"{side} x {side} grid at the reply cap",
                 {**few, "grid": {"x": [0, 1000, side], "y": [0, 1000, side]}})
    assert grid["shape"] == [side, side] and np.isfinite(grid["estimates"]).all()

    n = most_points(budget, None)
    assert n > 5000
    result = timed(kriging, relay, f"global kriging of {n} points at the memory cap",
                   {**scattered(n), "targets": TARGETS})
    assert result["shape"] == [3] and np.isfinite(result["estimates"]).all()
    assert peak_rss(kriging) < 512 * MIB

    before = peak_rss(kriging)
    most_global = most_points(budget, None, 121, grid_rows=11)
    most_targets = budget.most_targets(Size(50, 4_000_000, 2000, 0, None, True))
    assert most_targets >= side * side
    data = scattered(2000)
    too_many = {**scattered(12_000), "grid": {"x": [0, 1000, 11], "y": [0, 1000, 11]}}
    expected = [
        ({**scattered(n + 1), "targets": TARGETS}, "params.points",
         ("compute_memory_mb", f"at most {n:,} points")),
        (too_many, "params.points", ("12,000 points", "512 MB budget (compute_memory_mb",
                                     "give neighbours (e.g. 50)", f"at most {most_global:,}")),
        ({**too_many, "neighbours": 200_000}, "params.neighbours", ("at most 256",)),
        ({**few, "grid": {"x": [0, 1000, 2000], "y": [0, 1000, 2000]}}, "params.grid",
         ("4,000,000 targets", "max_message_bytes", f"at most {most_targets:,} targets")),
        ({**few, "grid": {"x": [0, 1000, side + 1], "y": [0, 1000, side + 1]}}, "params.grid",
         ("max_message_bytes",)),
        ({**data, "neighbours": 256, "grid": {"x": [0, 1000, 300], "y": [0, 1000, 300]}},
         "params.grid", ("200 GFLOP budget (compute_work_gflop)", "neighbours", "targets")),
    ]
    for params, field, phrases in expected:
        started = time.perf_counter()
        err = refusal(kriging, relay, params)
        # Refused before any work: the calls themselves would take minutes, or gigabytes.
        assert time.perf_counter() - started < 10
        assert (err.status, err.code, err.field) == (422, "too_large", field), err
        for phrase in phrases:
            assert phrase in err.message, (phrase, err.message)
    assert peak_rss(kriging) == before  # nothing of the refused calls was allocated


def test_small_budget_holds_the_largest_global_and_neighbour_calls(services, pki, relay):
    probe = start_kriging(services, pki)
    idle_mb = math.ceil(budget_of(probe, relay).process_bytes / MIB)
    probe.proc.terminate()
    probe.proc.wait(timeout=10)
    budget_mb = idle_mb + SMALL_BUDGET_MB
    kriging = start_kriging(services, pki, "--compute-memory-mb", str(budget_mb))
    budget = budget_of(kriging, relay)

    n = most_points(budget, None)
    assert n > 500
    result = timed(kriging, relay, f"global kriging of {n} points, {budget_mb} MB budget",
                   {**scattered(n), "targets": TARGETS})
    assert result["shape"] == [3] and np.isfinite(result["estimates"]).all()
    err = refusal(kriging, relay, {**scattered(n + 1), "targets": TARGETS})
    assert (err.code, err.field) == ("too_large", "params.points")
    assert f"at most {n:,} points" in err.message and "compute_memory_mb" in err.message

    n = most_points(budget, 16)
    assert n > 10_000
    result = timed(kriging, relay, f"{n} points with 16 neighbours, {budget_mb} MB budget",
                   {**compact(n), "targets": TARGETS, "neighbours": 16})
    assert result["shape"] == [3] and np.isfinite(result["estimates"]).all()
    err = refusal(kriging, relay, {**compact(n + 1), "targets": TARGETS, "neighbours": 16})
    assert (err.code, err.field) == ("too_large", "params.points")
    assert f"at most {n:,} points" in err.message

    assert peak_rss(kriging) < budget_mb * MIB


def test_a_budget_below_the_idle_service_stops_it_at_start(services, pki):
    code, output = services.run_to_exit(
        "kriging", pki.identity("kriging", session=SESSION), "--session", SESSION,
        "--compute-memory-mb", "64")
    assert code == ExitCode.CONFIG_ERROR and "compute_memory_mb (64 MB) leaves no room" in output
