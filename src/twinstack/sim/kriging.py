"""Ordinary kriging of scattered 2-D data, with variogram models, fitting and a neighbour mode.

Variogram models and their parameters (the conventions geostatisticians and PyKrige use):

| model       | parameters               | gamma(h)                                             |
|-------------|--------------------------|------------------------------------------------------|
| spherical   | psill, range, nugget     | psill (1.5 h/r - 0.5 (h/r)^3) + nugget, h <= r;      |
|             |                          | psill + nugget beyond                                |
| exponential | psill, range, nugget     | psill (1 - exp(-3 h / r)) + nugget                   |
| gaussian    | psill, range, nugget     | psill (1 - exp(-h^2 / (4 r / 7)^2)) + nugget         |
| linear      | slope, nugget            | slope h + nugget                                     |
| power       | scale, exponent, nugget  | scale h^exponent + nugget                            |

gamma(0) is 0: the nugget is a discontinuity at the origin, so a target on a data point gets
that point's value exactly (and zero variance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import lu_factor, lu_solve
from scipy.optimize import least_squares
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist, pdist

PARAMETERS: dict[str, tuple[str, ...]] = {
    "spherical": ("psill", "range", "nugget"),
    "exponential": ("psill", "range", "nugget"),
    "gaussian": ("psill", "range", "nugget"),
    "linear": ("slope", "nugget"),
    "power": ("scale", "exponent", "nugget"),
}
ZERO_DISTANCE = 1e-10
_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Variogram:
    model: str
    params: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.model not in PARAMETERS:
            raise ValueError(f"unknown variogram model {self.model!r}; "
                             f"known: {', '.join(PARAMETERS)}")
        if len(self.params) != len(PARAMETERS[self.model]):
            raise ValueError(f"{self.model} takes {', '.join(PARAMETERS[self.model])}")
        if any(not np.isfinite(p) or p < 0 for p in self.params):
            raise ValueError("variogram parameters must be finite and not negative")
        if self.model in ("spherical", "exponential", "gaussian") and self.params[1] <= 0:
            raise ValueError("the variogram range must be positive")
        if self.model == "power" and not 0 < self.params[1] < 2:
            raise ValueError("the power variogram's exponent must lie in (0, 2)")

    def as_dict(self) -> dict[str, float | str]:
        return {"model": self.model, **dict(zip(PARAMETERS[self.model], self.params, strict=True))}

    def __call__(self, h: np.ndarray) -> np.ndarray:
        """gamma(h), with the nugget included for every h (callers zero the origin)."""
        return _gamma(self.model, self.params, h)


def _gamma(model: str, p: tuple[float, ...] | np.ndarray, h: np.ndarray) -> np.ndarray:
    if model == "spherical":
        psill, r, nugget = p
        ratio = np.minimum(h / r, 1.0)
        return psill * (1.5 * ratio - 0.5 * ratio**3) + nugget
    if model == "exponential":
        psill, r, nugget = p
        return psill * (1.0 - np.exp(-3.0 * h / r)) + nugget
    if model == "gaussian":
        psill, r, nugget = p
        return psill * (1.0 - np.exp(-(h**2) / (4.0 * r / 7.0) ** 2)) + nugget
    if model == "linear":
        slope, nugget = p
        return slope * h + nugget
    scale, exponent, nugget = p
    return scale * h**exponent + nugget


def _check_data(points: np.ndarray, values: np.ndarray) -> None:
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be pairs [x, y]; got shape {points.shape}")
    if values.shape != (points.shape[0],):
        raise ValueError(f"{points.shape[0]} points but {values.size} values")
    if points.shape[0] < 3:
        raise ValueError("kriging needs at least 3 data points")
    if not (np.isfinite(points).all() and np.isfinite(values).all()):
        raise ValueError("points and values must be finite numbers")
    unique = np.unique(points, axis=0)
    if unique.shape[0] != points.shape[0]:
        raise ValueError(f"{points.shape[0] - unique.shape[0]} points repeat another point's "
                         "location; merge them (e.g. average their values) first")


def experimental_variogram(points: np.ndarray, values: np.ndarray, n_lags: int = 12,
                           max_pairs_points: int = 3000, seed: int = 0
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binned semivariance up to half the largest distance: (lag centres, gamma, pair counts).

    Large inputs are subsampled (seeded, so fits are repeatable) to bound the O(n^2) pairs.
    """
    if points.shape[0] > max_pairs_points:
        keep = np.random.default_rng(seed).choice(points.shape[0], max_pairs_points,
                                                  replace=False)
        points, values = points[keep], values[keep]
    distances = pdist(points)
    halves = 0.5 * pdist(values[:, None], metric="sqeuclidean")
    edges = np.linspace(0.0, distances.max() / 2.0, n_lags + 1)
    which = np.digitize(distances, edges) - 1
    inside = (which >= 0) & (which < n_lags)
    counts = np.bincount(which[inside], minlength=n_lags)
    sums = np.bincount(which[inside], weights=halves[inside], minlength=n_lags)
    centres = np.bincount(which[inside], weights=distances[inside], minlength=n_lags)
    used = counts > 0
    return centres[used] / counts[used], sums[used] / counts[used], counts[used]


def fit_variogram(points: np.ndarray, values: np.ndarray, model: str) -> Variogram:
    """Least-squares fit to the experimental variogram, weighted by pair counts.

    Gaussian fits keep a nugget of at least 1e-6 of the variance: a zero nugget makes the
    Gaussian kriging system numerically singular.
    """
    points, values = np.asarray(points, float), np.asarray(values, float)
    _check_data(points, values)
    lags, gamma, counts = experimental_variogram(points, values)
    variance = max(float(np.var(values)), 1e-12)
    extent = float(lags.max()) * 2.0
    min_nugget = 1e-6 * variance if model == "gaussian" else 0.0
    if model in ("spherical", "exponential", "gaussian"):
        start = [variance, extent / 2.0, min_nugget]
        bounds = ([0.0, extent * 1e-3, min_nugget], [10 * variance, extent * 2, variance])
    elif model == "linear":
        start, bounds = [variance / extent, 0.0], ([0.0, 0.0], [np.inf, variance])
    elif model == "power":
        start = [variance / extent, 1.0, 0.0]
        bounds = ([0.0, 1e-3, 0.0], [np.inf, 1.999, variance])
    else:
        raise ValueError(f"unknown variogram model {model!r}; known: {', '.join(PARAMETERS)}")
    weights = np.sqrt(counts / counts.sum())

    def residuals(p: np.ndarray) -> np.ndarray:
        return (_gamma(model, p, lags) - gamma) * weights

    fit = least_squares(residuals, np.clip(start, *bounds), bounds=bounds, loss="soft_l1")
    return Variogram(model, tuple(float(v) for v in fit.x))


@dataclass(frozen=True)
class KrigingResult:
    estimates: np.ndarray
    variances: np.ndarray


def _semivariance(variogram: Variogram, distances: np.ndarray) -> np.ndarray:
    gamma = variogram(distances)
    gamma[distances <= ZERO_DISTANCE] = 0.0
    return gamma


def ordinary_kriging(points: np.ndarray, values: np.ndarray, targets: np.ndarray,
                     variogram: Variogram, *, neighbours: int | None = None) -> KrigingResult:
    """Estimates and kriging variances at `targets` (m x 2).

    With `neighbours`, each target uses only its nearest data points: O(m k^3) instead of one
    O(n^3) factorisation, for large inputs.
    """
    points, values = np.asarray(points, float), np.asarray(values, float)
    targets = np.asarray(targets, float).reshape(-1, 2)
    _check_data(points, values)
    if not np.isfinite(targets).all():
        raise ValueError("targets must be finite numbers")
    if neighbours is not None and neighbours < points.shape[0]:
        if neighbours < 3:
            raise ValueError("neighbours must be at least 3")
        return _kriging_local(points, values, targets, variogram, neighbours)
    return _kriging_global(points, values, targets, variogram)


def _system(points: np.ndarray, variogram: Variogram) -> np.ndarray:
    n = points.shape[0]
    a = np.ones((n + 1, n + 1))
    a[:n, :n] = _semivariance(variogram, cdist(points, points))
    a[n, n] = 0.0
    return a


def _kriging_global(points: np.ndarray, values: np.ndarray, targets: np.ndarray,
                    variogram: Variogram) -> KrigingResult:
    n = points.shape[0]
    factors = lu_factor(_system(points, variogram), check_finite=False)
    if not np.all(np.isfinite(factors[0])) or np.any(np.diag(factors[0]) == 0):
        raise ValueError("the kriging system is singular for this variogram; add a nugget")
    estimates = np.empty(targets.shape[0])
    variances = np.empty(targets.shape[0])
    chunk = max(1, _CHUNK_BYTES // (8 * (n + 1)))
    for start in range(0, targets.shape[0], chunk):
        part = slice(start, start + chunk)
        b = np.ones((n + 1, targets[part].shape[0]))
        b[:n] = _semivariance(variogram, cdist(points, targets[part]))
        x = lu_solve(factors, b, check_finite=False)
        estimates[part] = values @ x[:n]
        variances[part] = np.einsum("ij,ij->j", x, b)
    return KrigingResult(estimates, variances)


def _kriging_local(points: np.ndarray, values: np.ndarray, targets: np.ndarray,
                   variogram: Variogram, k: int) -> KrigingResult:
    distances, index = cKDTree(points).query(targets, k=k)
    estimates = np.empty(targets.shape[0])
    variances = np.empty(targets.shape[0])
    chunk = max(1, _CHUNK_BYTES // (8 * (k + 1) ** 2))
    for start in range(0, targets.shape[0], chunk):
        part = slice(start, start + chunk)
        near = points[index[part]]  # (c, k, 2)
        a = np.ones((near.shape[0], k + 1, k + 1))
        pair = np.linalg.norm(near[:, :, None, :] - near[:, None, :, :], axis=-1)
        a[:, :k, :k] = _semivariance(variogram, pair)
        a[:, k, k] = 0.0
        b = np.ones((near.shape[0], k + 1))
        b[:, :k] = _semivariance(variogram, distances[part])
        x = np.linalg.solve(a, b[:, :, None])[:, :, 0]
        estimates[part] = np.einsum("ck,ck->c", x[:, :k], values[index[part]])
        variances[part] = np.einsum("ck,ck->c", x, b)
    return KrigingResult(estimates, variances)


def grid_targets(x: tuple[float, float, int], y: tuple[float, float, int]
                 ) -> tuple[np.ndarray, tuple[int, int]]:
    """Targets of a regular grid, row by row (y outer, x inner), and the grid's (ny, nx)."""
    xs = np.linspace(x[0], x[1], int(x[2]))
    ys = np.linspace(y[0], y[1], int(y[2]))
    gx, gy = np.meshgrid(xs, ys)
    return np.column_stack([gx.ravel(), gy.ravel()]), (ys.size, xs.size)
