"""Ordinary kriging against PyKrige (the oracle) and against what kriging must do by definition."""

from __future__ import annotations

import numpy as np
import pytest
from pykrige.ok import OrdinaryKriging

from twinstack.sim.kriging import (
    PARAMETERS,
    Variogram,
    fit_variogram,
    grid_targets,
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
