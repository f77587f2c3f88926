"""Ordinary kriging against PyKrige (the oracle) and against what kriging must do by definition."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from pykrige.ok import OrdinaryKriging
from scipy.spatial.distance import pdist

from twinstack.sim.kriging import (
    PARAMETERS,
    Stopped,
    Variogram,
    experimental_variogram,
    fit_variogram,
    grid_targets,
    kriging_cost,
    native_bytes,
    ordinary_kriging,
)

CASES = [
    Variogram("spherical", (1.0, 40.0, 0.01)),
    Variogram("exponential", (0.8, 35.0, 0.05)),
    Variogram("gaussian", (1.0, 30.0, 0.01)),
    Variogram("linear", (0.02, 0.01)),
    Variogram("power", (0.05, 1.2, 0.01)),
]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    points = rng.uniform(0, 100, (250, 2))
    values = np.sin(points[:, 0] / 15) + np.cos(points[:, 1] / 20) + rng.normal(0, 0.05, 250)
    return points, values


def pykrige(points: np.ndarray, values: np.ndarray, variogram: Variogram) -> OrdinaryKriging:
    params = dict(zip(PARAMETERS[variogram.model], variogram.params, strict=True))
    return OrdinaryKriging(points[:, 0], points[:, 1], values, variogram_model=variogram.model,
                           variogram_parameters=params)


def rel_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


@pytest.mark.parametrize("variogram", CASES, ids=lambda v: v.model)
def test_grid_agrees_with_pykrige(data, variogram):
    points, values = data
    gx, gy = np.linspace(-5, 105, 23), np.linspace(0, 100, 19)
    expected, expected_var = pykrige(points, values, variogram).execute("grid", gx, gy)
    targets, shape = grid_targets((-5, 105, 23), (0, 100, 19))
    got = ordinary_kriging(points, values, targets, variogram)
    assert shape == (19, 23)
    assert rel_error(got.estimates.reshape(shape), expected) < 1e-6
    assert rel_error(got.variances.reshape(shape), expected_var) < 1e-6


@pytest.mark.parametrize("variogram", CASES[:3], ids=lambda v: v.model)
def test_nearest_neighbour_mode_agrees_with_pykrige(data, variogram):
    points, values = data
    targets = np.random.default_rng(3).uniform(0, 100, (60, 2))
    expected, expected_var = pykrige(points, values, variogram).execute(
        "points", targets[:, 0], targets[:, 1], n_closest_points=16, backend="loop")
    got = ordinary_kriging(points, values, targets, variogram, neighbours=16)
    assert rel_error(got.estimates, expected) < 1e-6
    assert rel_error(got.variances, expected_var) < 1e-6


def test_exact_at_data_points_and_constant_data(data):
    points, values = data
    got = ordinary_kriging(points, values, points[:10], CASES[0])
    np.testing.assert_allclose(got.estimates, values[:10], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.variances, 0.0, atol=1e-9)
    flat = ordinary_kriging(points, np.full(len(points), 3.5), [[50.0, 50.0]], CASES[1])
    assert flat.estimates[0] == pytest.approx(3.5, rel=1e-12)  # weights sum to one


@pytest.mark.parametrize("model", ["spherical", "exponential", "gaussian"])
def test_fitted_variogram_recovers_a_known_field(model):
    """A smooth field's fit has a positive range and sill and predicts held-out points."""
    rng = np.random.default_rng(11)
    points = rng.uniform(0, 100, (400, 2))
    field = np.sin(points[:, 0] / 12) * np.cos(points[:, 1] / 17)
    fitted = fit_variogram(points[:300], field[:300], model)
    assert fitted.params[0] > 0 and fitted.params[1] > 0
    got = ordinary_kriging(points[:300], field[:300], points[300:], fitted)
    assert np.sqrt(np.mean((got.estimates - field[300:]) ** 2)) < 0.1 * np.std(field)


@pytest.mark.parametrize(("points", "values", "message"), [
    ([[0, 0], [1, 1]], [1, 2], "at least 3"),
    ([[0, 0], [1, 1], [2, 2]], [1, 2], "3 points but 2 values"),
    ([[0, 0], [0, 0], [2, 2]], [1, 2, 3], "repeat another point"),
    ([[0, 0], [1, 1], [2, float("nan")]], [1, 2, 3], "finite"),
])
def test_bad_input_is_named(points, values, message):
    with pytest.raises(ValueError, match=message):
        ordinary_kriging(np.array(points, float), np.array(values, float), [[0.5, 0.5]],
                         CASES[0])


def test_bad_variograms_are_named():
    with pytest.raises(ValueError, match="unknown variogram model"):
        Variogram("cubic", (1, 2, 3))
    with pytest.raises(ValueError, match="range must be positive"):
        Variogram("spherical", (1, 0, 0))
    with pytest.raises(ValueError, match="takes slope, nugget"):
        Variogram("linear", (1, 2, 3))


# The README example: four corners of the unit square, a fitted spherical variogram. -------

CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
CORNER_VALUES = np.array([1.0, 2.0, 3.0, 4.0])


def test_few_points_bin_every_pair_when_half_the_extent_holds_none():
    """No pair of the four corners lies within half the diagonal: all six pairs count."""
    lags, gamma, counts = experimental_variogram(CORNERS, CORNER_VALUES)
    np.testing.assert_allclose(lags, [1.0, np.sqrt(2)])
    np.testing.assert_allclose(gamma, [1.25, 2.5])  # sides: (0.5+2+2+0.5)/4; diagonals
    assert counts.tolist() == [4, 2]


@pytest.mark.parametrize("model", list(PARAMETERS))
def test_four_points_fit_and_reproduce_themselves(model):
    fitted = fit_variogram(CORNERS, CORNER_VALUES, model)
    targets, shape = grid_targets((0, 1, 11), (0, 1, 11))
    got = ordinary_kriging(CORNERS, CORNER_VALUES, targets, fitted)
    estimates = got.estimates.reshape(shape)
    np.testing.assert_allclose(estimates[[0, 0, -1, -1], [0, -1, 0, -1]], CORNER_VALUES,
                               atol=1e-9)
    assert estimates[5, 5] == pytest.approx(2.5, abs=1e-9)  # equal weights by symmetry
    assert np.all(got.variances > -1e-9) and got.variances.reshape(shape)[5, 5] > 0


def test_blocked_pairs_match_all_pairs_at_once():
    """The experimental variogram visits pairs in blocks; the bins are those of pdist."""
    rng = np.random.default_rng(5)
    points = rng.uniform(0, 100, (700, 2))
    values = np.sin(points[:, 0] / 9) + rng.normal(0, 0.1, 700)
    distances = pdist(points)
    halves = 0.5 * pdist(values[:, None], metric="sqeuclidean")
    edges = np.linspace(0.0, distances.max() / 2.0, 13)
    which = np.digitize(distances, edges) - 1
    inside = which < 12
    counts = np.bincount(which[inside], minlength=12)
    sums = np.bincount(which[inside], weights=halves[inside], minlength=12)
    lags, gamma, got_counts = experimental_variogram(points, values)
    assert got_counts.tolist() == counts.tolist()
    np.testing.assert_allclose(gamma, sums / counts, rtol=1e-12)
    assert lags.max() < distances.max() / 2


# The cost estimate: an upper bound on what the numerics hold, and their work. ---------------

def traced_peak(run) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("n", "m", "k", "fit", "grid"), [
    (1500, 400, None, True, False),  # the (n+1)^2 system dominates
    (60, 120_000, None, False, True),  # the right-hand sides and the grid
    (40_000, 20_000, 16, True, True),  # many small systems, a k-d tree
    (3000, 40, 256, False, False),  # the largest neighbour systems
    (8000, 10, 8, True, False),  # the fit's pair subsample
], ids=["global", "grid", "local", "many-neighbours", "fit"])
def test_cost_bounds_what_numpy_allocates(n, m, k, fit, grid):
    rng = np.random.default_rng(n)
    points = rng.uniform(0, 1000, (n, 2))
    values = np.sin(points[:, 0] / 150) + rng.normal(0, 0.1, n)
    fixed = Variogram("spherical", (1.0, 300.0, 0.01))
    side = math.isqrt(m)

    def run() -> None:
        variogram = fit_variogram(points, values, "spherical") if fit else fixed
        targets = (grid_targets((0, 1000, side), (0, 1000, side))[0] if grid
                   else rng.uniform(0, 1000, (m, 2)))
        ordinary_kriging(points, values, targets, variogram, neighbours=k)

    cost = kriging_cost(n, side * side if grid else m, neighbours=k, fit=fit)
    traced = traced_peak(run) + points.nbytes + values.nbytes  # inputs are counted too
    # native_bytes is what numpy does not see (BLAS buffers, the k-d tree's C++ heap).
    assert traced <= cost.bytes - native_bytes()
    assert cost.bytes - native_bytes() <= 2 * traced + 20 * 2**20  # honest, not padded


def test_cost_counts_the_factorisation_and_the_solves():
    n, k = 3000, 50
    lu = 2 / 3 * (n + 1) ** 3
    assert lu <= kriging_cost(n, 1).flop <= 1.05 * lu
    per_target = kriging_cost(n, 2001).flop - kriging_cost(n, 1).flop
    assert per_target / 2000 == pytest.approx(2 * (n + 1) ** 2, rel=0.05)  # two triangles
    local = (kriging_cost(10**5, 2001, neighbours=k).flop
             - kriging_cost(10**5, 1, neighbours=k).flop) / 2000
    assert 2 / 3 * (k + 1) ** 3 < local < 3 * (k + 1) ** 3


@pytest.mark.parametrize("neighbours", [None, 16])
def test_cost_grows_with_every_count(neighbours):
    """Services search for the largest passing count by bisection: costs must be monotone."""
    for field in ("bytes", "flop"):
        by_points = [getattr(kriging_cost(n, 100, neighbours=neighbours, fit=True), field)
                     for n in (20, 200, 2000, 20_000)]
        by_targets = [getattr(kriging_cost(2000, m, neighbours=neighbours), field)
                      for m in (1, 10, 10**4, 10**6)]
        assert by_points == sorted(by_points) and by_targets == sorted(by_targets)
    assert kriging_cost(5000, 10, neighbours=8).bytes < kriging_cost(5000, 10).bytes


@pytest.mark.parametrize("neighbours", [None, 16])
def test_a_stop_request_ends_the_work_between_blocks(neighbours):
    """Asked before each block of targets: the first block is done, then it stops."""
    rng = np.random.default_rng(5)
    points = rng.uniform(0, 100, (300, 2))
    targets = rng.uniform(0, 100, (200_000, 2))
    asked = []

    def stop() -> bool:
        asked.append(True)
        return len(asked) > 1
    with pytest.raises(Stopped) as stopped:
        ordinary_kriging(points, np.ones(300), targets, CASES[0], neighbours=neighbours,
                         stop=stop)
    assert 0 < stopped.value.done < stopped.value.total == 200_000
    assert len(asked) == 2


def test_bounded_variograms_use_covariances_unless_they_are_not_positive_definite(data):
    """Spherical, exponential and gaussian variograms are kriged in covariance form (Cholesky),
    the others, and a covariance matrix Cholesky refuses, through the bordered system: the
    same answers either way."""
    from twinstack.sim import kriging

    points, values = data
    targets = np.random.default_rng(4).uniform(0, 100, (500, 2))
    for variogram in CASES[:3]:
        assert kriging._inverse_cholesky(points, variogram) is not None
        bordered = kriging._kriging_bordered(points, values, targets, variogram, lambda: False)
        got = ordinary_kriging(points, values, targets, variogram)
        assert rel_error(got.estimates, bordered.estimates) < 1e-9
        assert rel_error(got.variances, bordered.variances) < 1e-9
    smooth = Variogram("gaussian", (1.0, 300.0, 0.0))  # no nugget, a long range: not SPD
    assert kriging._inverse_cholesky(points, smooth) is None
    got = ordinary_kriging(points, values, targets, smooth)
    bordered = kriging._kriging_bordered(points, values, targets, smooth, lambda: False)
    assert np.array_equal(got.estimates, bordered.estimates)


def test_a_small_call_runs_on_one_blas_thread_and_a_large_one_on_all(monkeypatch):
    """The kriging service's numerics see one BLAS thread in a small call (more would spin
    around small LAPACK calls for nothing) and every thread BLAS has in a large one."""
    from threadpoolctl import threadpool_info

    from twinstack.services import kriging as service
    from twinstack.sim import kriging

    seen: list[int] = []
    real = kriging.ordinary_kriging

    def observed(*args, **kwargs):
        seen.append(max(lib["num_threads"] for lib in threadpool_info()
                        if lib["user_api"] == "blas"))
        return real(*args, **kwargs)

    monkeypatch.setattr(kriging, "ordinary_kriging", observed)
    budget = service.Budget(512, 200.0, 16 * 2**20, 32)
    rng = np.random.default_rng(2)
    all_threads = max(lib["num_threads"] for lib in threadpool_info()
                      if lib["user_api"] == "blas")
    for n, side in ((30, 5), (1500, 60)):
        points = rng.uniform(0, 100, (n, 2))
        params = service.InterpolateParams(
            points=points.tolist(), values=np.sin(points[:, 0] / 10).tolist(),
            grid={"x": [0, 100, side], "y": [0, 100, side]},
            variogram={"model": "spherical", "psill": 1.0, "range": 30.0, "nugget": 0.01})
        planned = budget.check(service.Size.of(params), "params.grid")
        service._interpolate(params, service.blas_threads(planned))
    assert seen == [1, all_threads]
