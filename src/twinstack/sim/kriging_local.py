"""Local (k-nearest) ordinary kriging's inner loop, compiled by numba: each target's bordered
(k+1)^2 semivariance system filled straight from the points (half of it: it is symmetric) and
solved with LAPACK, the targets spread over the cores.

The numpy form of the same arithmetic built (c, k, k) arrays of distances and semivariances for
a block of targets and spent 60 % of its time there (10,000 targets, k = 50). Imported only by
local kriging: numba costs a kriging service ~0.3 s to import, which global kriging never needs.
"""

from __future__ import annotations

import math

import numba
import numpy as np

MODELS = ("spherical", "exponential", "gaussian", "linear", "power")  # codes for the kernel


@numba.njit(cache=True, inline="always")
def _gamma(model: int, p: np.ndarray, h: float, zero: float) -> float:
    """sim.kriging's variogram models at one distance, in the same operations; 0 at h <= zero."""
    if h <= zero:
        return 0.0
    if model == 0:
        ratio = min(h / p[1], 1.0)
        return p[0] * (1.5 * ratio - 0.5 * ratio**3) + p[2]
    if model == 1:
        return p[0] * (1.0 - math.exp(-3.0 * h / p[1])) + p[2]
    if model == 2:
        return p[0] * (1.0 - math.exp(-(h**2) / (4.0 * p[1] / 7.0) ** 2)) + p[2]
    if model == 3:
        return p[0] * h + p[1]
    return p[0] * h ** p[1] + p[2]


@numba.njit(parallel=True, cache=True)
def krige_targets(points: np.ndarray, values: np.ndarray, index: np.ndarray,
                  distances: np.ndarray, model: int, params: np.ndarray, zero: float,
                  estimates: np.ndarray, variances: np.ndarray) -> None:
    """Estimates and variances of targets whose k nearest points are `index` at `distances`."""
    c, k = index.shape
    for t in numba.prange(c):
        a = np.empty((k + 1, k + 1))
        b = np.empty(k + 1)
        for i in range(k):
            p = index[t, i]
            a[i, i] = 0.0
            for j in range(i + 1, k):
                q = index[t, j]
                dx = points[p, 0] - points[q, 0]
                dy = points[p, 1] - points[q, 1]
                a[i, j] = a[j, i] = _gamma(model, params, math.sqrt(dx * dx + dy * dy), zero)
            a[i, k] = a[k, i] = 1.0
            b[i] = _gamma(model, params, distances[t, i], zero)
        a[k, k] = 0.0
        b[k] = 1.0
        x = np.linalg.solve(a, b)
        estimate = 0.0
        variance = 0.0
        for i in range(k):
            estimate += x[i] * values[index[t, i]]
            variance += x[i] * b[i]
        estimates[t] = estimate
        variances[t] = variance + x[k]


def compile_now() -> None:
    """Compile the kernel into numba's cache (beside this file) now, not in a user's first
    local kriging call (~10 s on a 2-core machine)."""
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    index = np.array([[0, 1, 2]])
    out = np.empty(1), np.empty(1)
    krige_targets(points, np.ones(3), index, np.ones((1, 3)), 0, np.array([1.0, 2.0, 0.0]),
                  1e-10, *out)


if __name__ == "__main__":
    compile_now()
