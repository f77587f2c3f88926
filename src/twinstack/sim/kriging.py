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

import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy.linalg import LinAlgWarning, lu_factor, lu_solve
from scipy.linalg.blas import dtrmm
from scipy.linalg.lapack import dpotrf, dtrtri
from scipy.optimize import least_squares
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

PARAMETERS: dict[str, tuple[str, ...]] = {
    "spherical": ("psill", "range", "nugget"),
    "exponential": ("psill", "range", "nugget"),
    "gaussian": ("psill", "range", "nugget"),
    "linear": ("slope", "nugget"),
    "power": ("scale", "exponent", "nugget"),
}
ZERO_DISTANCE = 1e-10
BOUNDED = ("spherical", "exponential", "gaussian")  # a sill: kriged in covariance form
CHUNK_ELEMENTS = 2**18  # float64 values (2 MiB) in one block of pairs, matrix rows or systems
FIT_POINTS = 3000  # the experimental variogram uses at most this many points (seeded subsample)
MIN_FIT_PAIRS = 30  # fewer pairs within half the largest distance: bin up to the largest


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


def _pair_blocks(points: np.ndarray, values: np.ndarray
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(distances, half squared value differences) of the pairs i < j, a block of rows at a time.

    The pairs come in pdist's order; a block holds about CHUNK_ELEMENTS pairs, so memory stays
    a few chunk-sized arrays however many points there are.
    """
    n = points.shape[0]
    rows = max(1, CHUNK_ELEMENTS // n)
    for start in range(0, n - 1, rows):
        stop = min(start + rows, n - 1)
        later = np.arange(n - start - 1) >= np.arange(stop - start)[:, None]  # column j > row i
        distances = cdist(points[start:stop], points[start + 1:])[later]
        differences = (values[start:stop, None] - values[None, start + 1:])[later]
        yield distances, 0.5 * differences**2


def _binned(points: np.ndarray, values: np.ndarray, cutoff: float, n_lags: int,
            inclusive: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair counts, summed semivariances and summed distances in n_lags bins up to cutoff."""
    inner = np.linspace(0.0, cutoff, n_lags + 1)[1:-1]
    counts = np.zeros(n_lags, dtype=np.int64)
    sums, centres = np.zeros(n_lags), np.zeros(n_lags)
    for distances, halves in _pair_blocks(points, values):
        keep = distances <= cutoff if inclusive else distances < cutoff
        which = np.searchsorted(inner, distances[keep], side="right")
        counts += np.bincount(which, minlength=n_lags)
        sums += np.bincount(which, weights=halves[keep], minlength=n_lags)
        centres += np.bincount(which, weights=distances[keep], minlength=n_lags)
    return counts, sums, centres


def experimental_variogram(points: np.ndarray, values: np.ndarray, n_lags: int = 12,
                           max_pairs_points: int = FIT_POINTS, seed: int = 0
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binned semivariance: (lag centres, gamma, pair counts).

    Bins reach half the largest distance, the usual cut-off beyond which lags rest on few pairs
    near the edges. When fewer than MIN_FIT_PAIRS pairs lie that close (a handful of points:
    the four corners of a square have none), the bins reach the largest distance instead, so
    that every pair counts. Large inputs are subsampled (seeded, so fits are repeatable) to
    bound the O(n^2) pairs.
    """
    if points.shape[0] > max_pairs_points:
        keep = np.random.default_rng(seed).choice(points.shape[0], max_pairs_points,
                                                  replace=False)
        points, values = points[keep], values[keep]
    largest = max(float(d.max()) for d, _ in _pair_blocks(points, values))
    counts, sums, centres = _binned(points, values, largest / 2.0, n_lags, inclusive=False)
    if counts.sum() < MIN_FIT_PAIRS:
        counts, sums, centres = _binned(points, values, largest, n_lags, inclusive=True)
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


class Stopped(Exception):
    """The caller asked to stop (its `stop()` said so between two blocks of targets)."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"stopped after {done} of {total} targets")
        self.done, self.total = done, total


def _never() -> bool:
    return False


def ordinary_kriging(points: np.ndarray, values: np.ndarray, targets: np.ndarray,
                     variogram: Variogram, *, neighbours: int | None = None,
                     stop: Callable[[], bool] = _never) -> KrigingResult:
    """Estimates and kriging variances at `targets` (m x 2).

    With `neighbours`, each target uses only its nearest data points: O(m k^3) instead of one
    O(n^3) factorisation, for large inputs. `stop()` is asked before each block of targets,
    so work nobody waits for any more ends early (raising Stopped); a thread cannot be killed.
    """
    points, values = np.asarray(points, float), np.asarray(values, float)
    targets = np.asarray(targets, float).reshape(-1, 2)
    _check_data(points, values)
    if not np.isfinite(targets).all():
        raise ValueError("targets must be finite numbers")
    if uses_neighbours(points.shape[0], neighbours):
        assert neighbours is not None
        if neighbours < 3:
            raise ValueError("neighbours must be at least 3")
        return _kriging_local(points, values, targets, variogram, neighbours, stop)
    return _kriging_global(points, values, targets, variogram, stop)


def uses_neighbours(n_points: int, neighbours: int | None) -> bool:
    """Local (k nearest) kriging; with k >= n every target would use every point: global."""
    return neighbours is not None and neighbours < n_points


def _system(points: np.ndarray, variogram: Variogram) -> np.ndarray:
    """The bordered semivariance matrix, filled a block of rows at a time.

    Built in place, so no n x n temporary (distances, model terms) ever exists beside it. The
    matrix is symmetric, so its transpose is the same matrix in Fortran order: LAPACK factors
    that view in place without a copy.
    """
    n = points.shape[0]
    a = np.ones((n + 1, n + 1))
    rows = max(1, CHUNK_ELEMENTS // n)
    for start in range(0, n, rows):
        block = slice(start, min(start + rows, n))
        a[block, :n] = _semivariance(variogram, cdist(points[block], points))
    a[n, n] = 0.0
    return a.T


def _finite_rows(matrix: np.ndarray) -> bool:
    rows = max(1, CHUNK_ELEMENTS // matrix.shape[1])
    return all(np.isfinite(matrix[i:i + rows]).all() for i in range(0, matrix.shape[0], rows))


def _kriging_global(points: np.ndarray, values: np.ndarray, targets: np.ndarray,
                    variogram: Variogram, stop: Callable[[], bool]) -> KrigingResult:
    if variogram.model in BOUNDED:
        inverse = _inverse_cholesky(points, variogram)
        if inverse is not None:
            return _kriging_covariance(inverse, points, values, targets, variogram, stop)
    return _kriging_bordered(points, values, targets, variogram, stop)


def _inverse_cholesky(points: np.ndarray, variogram: Variogram) -> np.ndarray | None:
    """L^-1 of the covariances' Cholesky factor C = L L^T (lower triangle; the upper one is
    left over), or None where C is not numerically positive definite. Built, factored and
    inverted in one n x n array: C is symmetric, so its transpose is it in Fortran order."""
    n = points.shape[0]
    sill = variogram.params[0] + variogram.params[2]
    covariances = np.empty((n, n))
    rows = max(1, CHUNK_ELEMENTS // n)
    for start in range(0, n, rows):
        block = slice(start, min(start + rows, n))
        covariances[block] = sill - _semivariance(variogram, cdist(points[block], points))
    factor, info = dpotrf(covariances.T, lower=1, overwrite_a=1, clean=0)
    if info != 0:
        return None
    inverse, info = dtrtri(factor, lower=1, overwrite_c=1)
    return inverse if info == 0 and np.isfinite(np.diag(inverse)).all() else None


def _kriging_covariance(inverse: np.ndarray, points: np.ndarray, values: np.ndarray,
                        targets: np.ndarray, variogram: Variogram, stop: Callable[[], bool]
                        ) -> KrigingResult:
    """Ordinary kriging in covariance form, C = sill - gamma, for bounded variograms: the same
    weights as the bordered system (the constraint absorbs the constant), with the
    unbiasedness multiplier solved for in closed form. One triangular product of n^2 per
    target instead of an LU solve's 2 n^2, at matrix-product speed."""
    n = points.shape[0]
    sill = variogram.params[0] + variogram.params[2]
    u = dtrmm(1.0, inverse, np.ones((n, 1)), lower=1)[:, 0]  # L^-1 1
    v = dtrmm(1.0, inverse, values.reshape(n, 1).copy(order="F"), lower=1)[:, 0]  # L^-1 z
    ones, vu = u @ u, v @ u
    estimates = np.empty(targets.shape[0])
    variances = np.empty(targets.shape[0])
    chunk = max(1, CHUNK_ELEMENTS // n)
    for start in range(0, targets.shape[0], chunk):
        if stop():
            raise Stopped(start, targets.shape[0])
        part = slice(start, start + chunk)
        covariances = sill - _semivariance(variogram, cdist(targets[part], points))
        y = dtrmm(1.0, inverse, covariances.T, lower=1, overwrite_b=1)  # L^-1 c per target
        uy = u @ y
        mu = (uy - 1.0) / ones  # the unbiasedness multiplier
        estimates[part] = v @ y - mu * vu
        variances[part] = sill - np.einsum("ij,ij->j", y, y) + mu * uy - mu
    return KrigingResult(estimates, variances)


def _kriging_bordered(points: np.ndarray, values: np.ndarray, targets: np.ndarray,
                      variogram: Variogram, stop: Callable[[], bool]) -> KrigingResult:
    n = points.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LinAlgWarning)  # a zero pivot is reported below
        factors = lu_factor(_system(points, variogram), overwrite_a=True, check_finite=False)
    if np.any(np.diag(factors[0]) == 0) or not _finite_rows(factors[0]):
        raise ValueError("the kriging system is singular for this variogram; add a nugget")
    estimates = np.empty(targets.shape[0])
    variances = np.empty(targets.shape[0])
    chunk = max(1, CHUNK_ELEMENTS // (n + 1))
    for start in range(0, targets.shape[0], chunk):
        if stop():
            raise Stopped(start, targets.shape[0])
        part = slice(start, start + chunk)
        b = np.ones((n + 1, targets[part].shape[0]))
        b[:n] = _semivariance(variogram, cdist(points, targets[part]))
        x = lu_solve(factors, b, check_finite=False)
        estimates[part] = values @ x[:n]
        variances[part] = np.einsum("ij,ij->j", x, b)
    return KrigingResult(estimates, variances)


def _kriging_local(points: np.ndarray, values: np.ndarray, targets: np.ndarray,
                   variogram: Variogram, k: int, stop: Callable[[], bool]) -> KrigingResult:
    from twinstack.sim import kriging_local  # numba: only where local kriging is asked for

    tree = cKDTree(points)
    estimates = np.empty(targets.shape[0])
    variances = np.empty(targets.shape[0])
    model = kriging_local.MODELS.index(variogram.model)
    params = np.array(variogram.params, float)
    chunk = max(1, CHUNK_ELEMENTS // k)  # targets whose neighbours' indices and distances
    for start in range(0, targets.shape[0], chunk):  # fill a block
        if stop():
            raise Stopped(start, targets.shape[0])
        part = slice(start, start + chunk)
        distances, index = tree.query(targets[part], k=k)
        kriging_local.krige_targets(points, values, index, distances, model, params,
                                    ZERO_DISTANCE, estimates[part], variances[part])
    return KrigingResult(estimates, variances)


def grid_targets(x: tuple[float, float, int], y: tuple[float, float, int]
                 ) -> tuple[np.ndarray, tuple[int, int]]:
    """Targets of a regular grid, row by row (y outer, x inner), and the grid's (ny, nx)."""
    xs = np.linspace(x[0], x[1], int(x[2]))
    ys = np.linspace(y[0], y[1], int(y[2]))
    gx, gy = np.meshgrid(xs, ys)
    return np.column_stack([gx.ravel(), gy.ravel()]), (ys.size, xs.size)


# BLAS packs panels for each of its threads (one per CPU this process may use) and LAPACK
# works beside them; measured 7 MB with 2 threads.
BLAS_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
    else os.cpu_count() or 1
# What the functions above allocate, in units of the blocks they work on, from tracemalloc
# peaks (tests/unit/test_kriging.py holds the estimate to them) rounded up.
_BLOCK_ARRAYS = 8  # chunk-sized arrays alive at once: distances, semivariance terms, solves
_FIT_BLOCK_ARRAYS = 8  # in a block of pairs: distances, differences, masks, bins, weights
_UNIQUE_BYTES = 48  # per point: the duplicate-location check (np.unique over rows)
_TREE_BYTES = 80  # per point: cKDTree's copy of the points, its index and nodes (C++ heap)
_GAMMA_FLOP = 25  # per semivariance: a distance and a variogram model
_SEARCH_FLOP = 20  # per neighbour and tree level: a k-d tree query


@dataclass(frozen=True)
class Cost:
    """What one kriging run takes: the most bytes it holds at once and its floating-point work."""

    bytes: int
    flop: float


def native_bytes(threads: int = BLAS_THREADS) -> int:
    """Memory the numeric libraries allocate outside numpy: 16 MiB, and 2 MiB a BLAS thread."""
    return (16 + 2 * threads) * 2**20


def kriging_cost(n_points: int, n_targets: int, *, neighbours: int | None = None,
                 fit: bool = False, threads: int = BLAS_THREADS) -> Cost:
    """Peak bytes and FLOPs of ordinary_kriging (and fit_variogram first, with `fit`).

    A pure function of the request's sizes, so a service can refuse a request before it
    allocates anything. Global kriging holds the (n+1)^2 system and factors it in O(n^3); local
    kriging holds a k-d tree and solves one (k+1)^2 system per target and thread. Both work
    through CHUNK_ELEMENTS-sized blocks. Inputs and results (points, values, targets, estimates,
    variances) are counted; a grid's targets count with the two coordinate planes they are
    built from.
    """
    n, m = n_points, n_targets
    chunk = 8 * CHUNK_ELEMENTS
    data = 24 * n + 32 * m
    phases = [_UNIQUE_BYTES * n]
    flop = 10.0 * n * math.log2(n + 1)
    if fit:
        sample = min(n, FIT_POINTS)
        phases.append(8 * n + 24 * sample + _FIT_BLOCK_ARRAYS * max(chunk, 8 * sample))
        flop += 3 * sample**2 / 2 * _GAMMA_FLOP + 1e7  # up to three passes over the pairs
    if uses_neighbours(n, neighbours):
        assert neighbours is not None
        k = neighbours
        # the tree, a block's neighbour indices and distances, and a system, a right-hand
        # side and LAPACK's copies of them per thread (kriging_local)
        phases.append(_TREE_BYTES * n + 2 * chunk + threads * 24 * (k + 2) ** 2)
        per_target = (2 / 3 * (k + 1) ** 3 + 2 * (k + 1) ** 2 + _GAMMA_FLOP * k * (k + 1) / 2
                      + _SEARCH_FLOP * k * math.log2(n + 1))
        flop += 20.0 * n * math.log2(n + 1) + m * per_target
    else:
        phases.append(8 * (n + 1) ** 2 + 8 * (n + 1) + _BLOCK_ARRAYS * max(chunk, 8 * (n + 1)))
        flop += (2 / 3 * (n + 1) ** 3 + _GAMMA_FLOP * n**2
                 + m * (2 * (n + 1) ** 2 + (_GAMMA_FLOP + 4) * n))
    return Cost(native_bytes(threads) + data + max(phases), flop)
