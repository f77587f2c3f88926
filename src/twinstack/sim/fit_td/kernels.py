"""The leapfrog's loops (numba, parallel over x). Homogeneous medium: the update coefficients
are scalars; the spacings enter as inverse-length arrays so graded grids cost nothing extra.

Shapes for nx * ny * nz cells: ex (nx, ny+1, nz+1), ey (nx+1, ny, nz+1), ez (nx+1, ny+1, nz);
hx (nx+1, ny, nz), hy (nx, ny+1, nz), hz (nx, ny, nz+1). E on the outer faces is tangential
to a PEC wall and never updated (it stays 0).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange


@numba.njit(parallel=True, cache=True)
def update_h(ex: np.ndarray, ey: np.ndarray, ez: np.ndarray, hx: np.ndarray, hy: np.ndarray,
             hz: np.ndarray, idx: np.ndarray, idy: np.ndarray, idz: np.ndarray,
             ch: float) -> None:
    """H(n+1/2) = H(n-1/2) - dt/mu curl E(n), over every H."""
    nx, ny, nz = hy.shape[0], hx.shape[1], hx.shape[2]
    for i in prange(nx + 1):
        for j in range(ny):
            for k in range(nz):
                hx[i, j, k] -= ch * ((ez[i, j + 1, k] - ez[i, j, k]) * idy[j]
                                     - (ey[i, j, k + 1] - ey[i, j, k]) * idz[k])
    for i in prange(nx):
        for j in range(ny + 1):
            for k in range(nz):
                hy[i, j, k] -= ch * ((ex[i, j, k + 1] - ex[i, j, k]) * idz[k]
                                     - (ez[i + 1, j, k] - ez[i, j, k]) * idx[i])
        for j in range(ny):
            for k in range(nz + 1):
                hz[i, j, k] -= ch * ((ey[i + 1, j, k] - ey[i, j, k]) * idx[i]
                                     - (ex[i, j + 1, k] - ex[i, j, k]) * idy[j])


@numba.njit(parallel=True, cache=True)
def update_e(ex: np.ndarray, ey: np.ndarray, ez: np.ndarray, hx: np.ndarray, hy: np.ndarray,
             hz: np.ndarray, idxd: np.ndarray, idyd: np.ndarray, idzd: np.ndarray,
             ce: float) -> None:
    """E(n+1) = E(n) + dt/eps curl H(n+1/2), over the edges inside the PEC box."""
    nx, ny, nz = hy.shape[0], hx.shape[1], hx.shape[2]
    for i in prange(nx):
        for j in range(1, ny):
            for k in range(1, nz):
                ex[i, j, k] += ce * ((hz[i, j, k] - hz[i, j - 1, k]) * idyd[j]
                                     - (hy[i, j, k] - hy[i, j, k - 1]) * idzd[k])
    for i in prange(1, nx):
        for j in range(ny):
            for k in range(1, nz):
                ey[i, j, k] += ce * ((hx[i, j, k] - hx[i, j, k - 1]) * idzd[k]
                                     - (hz[i, j, k] - hz[i - 1, j, k]) * idxd[i])
        for j in range(1, ny):
            for k in range(nz):
                ez[i, j, k] += ce * ((hy[i, j, k] - hy[i - 1, j, k]) * idxd[i]
                                     - (hx[i, j, k] - hx[i, j - 1, k]) * idyd[j])
