"""The leapfrog's loops (numba, parallel over x). The E update walks runs of one material
class along z (materials.EdgeRuns), so its inner loop has scalar coefficients; the medium is
non-magnetic and uniform for H. The spacings enter as inverse-length arrays so graded grids
cost nothing extra.

Shapes for nx * ny * nz cells: ex (nx, ny+1, nz+1), ey (nx+1, ny, nz+1), ez (nx+1, ny+1, nz).
H has a ghost layer on both sides of the two axes its curl is taken along, always 0:
hx (nx+1, ny+2, nz+2), hy (nx+2, ny+1, nz+2), hz (nx+2, ny+2, nz+1); the H of cell face
(i, j, k) is hx[i, j+1, k+1], hy[i+1, j, k+1], hz[i+1, j+1, k]. The ghosts make a PMC wall
(tangential H = 0 on it) by just updating E on it; on a PEC wall tangential E is never updated
and stays 0. `lo`/`hi`: the first and last E index along x, y, z updated (0 and n on PMC walls,
1 and n-1 on PEC ones).

The loops are per plane of x: H on node plane i (hx) and cell plane i (hy, hz), E on cell
plane i (ex) and node plane i (ey, ez). `sweep` does H, or E, or both in one sweep (E of plane
i right after the H it reads, while it is in cache), each thread a block of planes, the first
node plane of each block after a barrier (the block before it still reads it). The CPML's
curl terms (pml.py: twelve, each a map or list of the slab's indices, b, c, psi, and for E
the edges' cb) are done on the rows the update has just written: a separate pass over them
cost as much as the update.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import prange


@numba.njit(inline="always")
def _absorb(out: np.ndarray, high: np.ndarray, low: np.ndarray, psi: np.ndarray, b: float,
            c: float, scale: float) -> None:
    """One CPML term along a row: psi = b psi + c (high - low); out += scale psi."""
    for k in range(psi.size):
        value = b * psi[k] + c * (high[k] - low[k])
        psi[k] = value
        out[k] += scale * value


@numba.njit(inline="always")
def _absorb_e(out: np.ndarray, high: np.ndarray, low: np.ndarray, psi: np.ndarray, b: float,
              c: float, cb: np.ndarray, sign: float) -> None:
    """_absorb with each edge's own cb."""
    for k in range(psi.size):
        value = b * psi[k] + c * (high[k] - low[k])
        psi[k] = value
        out[k] += sign * cb[k] * value


@numba.njit(inline="always")
def _h_node(i: int, ey: np.ndarray, ez: np.ndarray, hx: np.ndarray, idy: np.ndarray,
            idz: np.ndarray, ch: float, terms: Any) -> None:
    """hx on node plane i, with its CPML terms across y and z."""
    ny, nz = ey.shape[1], ez.shape[2]
    (ymap, yb, yc, ypsi, _), (zk, zb, zc, zpsi, _) = terms[0], terms[1]
    for j in range(ny):
        for k in range(nz):
            hx[i, j + 1, k + 1] -= ch * ((ez[i, j + 1, k] - ez[i, j, k]) * idy[j]
                                         - (ey[i, j, k + 1] - ey[i, j, k]) * idz[k])
        s = ymap[j]
        if s >= 0:
            _absorb(hx[i, j + 1, 1:nz + 1], ez[i, j + 1], ez[i, j], ypsi[i, s], yb[s], yc[s],
                    -ch)
        for t in range(zk.size):
            k = zk[t]
            value = zb[t] * zpsi[i, j, t] + zc[t] * (ey[i, j, k + 1] - ey[i, j, k])
            zpsi[i, j, t] = value
            hx[i, j + 1, k + 1] += ch * value


@numba.njit(inline="always")
def _h_cell(i: int, ex: np.ndarray, ey: np.ndarray, ez: np.ndarray, hy: np.ndarray,
            hz: np.ndarray, idx: np.ndarray, idy: np.ndarray, idz: np.ndarray, ch: float,
            terms: Any) -> None:
    """hy and hz on cell plane i, with their CPML terms."""
    ny, nz = ey.shape[1], ez.shape[2]
    (zk, zb, zc, zpsi, _), (xmap, xb, xc, xpsi, _) = terms[2], terms[3]
    (x2map, x2b, x2c, x2psi, _), (ymap, yb, yc, ypsi, _) = terms[4], terms[5]
    for j in range(ny + 1):
        for k in range(nz):
            hy[i + 1, j, k + 1] -= ch * ((ex[i, j, k + 1] - ex[i, j, k]) * idz[k]
                                         - (ez[i + 1, j, k] - ez[i, j, k]) * idx[i])
        for t in range(zk.size):
            k = zk[t]
            value = zb[t] * zpsi[i, j, t] + zc[t] * (ex[i, j, k + 1] - ex[i, j, k])
            zpsi[i, j, t] = value
            hy[i + 1, j, k + 1] -= ch * value
        s = xmap[i]
        if s >= 0:
            _absorb(hy[i + 1, j, 1:nz + 1], ez[i + 1, j], ez[i, j], xpsi[s, j], xb[s], xc[s],
                    ch)
    for j in range(ny):
        for k in range(nz + 1):
            hz[i + 1, j + 1, k] -= ch * ((ey[i + 1, j, k] - ey[i, j, k]) * idx[i]
                                         - (ex[i, j + 1, k] - ex[i, j, k]) * idy[j])
        s = x2map[i]
        if s >= 0:
            _absorb(hz[i + 1, j + 1], ey[i + 1, j], ey[i, j], x2psi[s, j], x2b[s], x2c[s], -ch)
        s = ymap[j]
        if s >= 0:
            _absorb(hz[i + 1, j + 1], ex[i, j + 1], ex[i, j], ypsi[i, s], yb[s], yc[s], ch)


@numba.njit(inline="always")
def _run(r: int, end: int, k0: np.ndarray, nk: int, first: int, last: int) -> tuple[int, int]:
    """Run r's k range, within first..last."""
    stop = k0[r + 1] if r + 1 < end else nk
    return max(k0[r], first), min(stop, last + 1)


@numba.njit(inline="always")
def _e_cell(i: int, ex: np.ndarray, hy: np.ndarray, hz: np.ndarray, idyd: np.ndarray,
            idzd: np.ndarray, lo: np.ndarray, hi: np.ndarray, xs: np.ndarray, xk: np.ndarray,
            xc: np.ndarray, xa: np.ndarray, xb: np.ndarray,
            terms: Any) -> None:
    """ex on cell plane i (runs of one class along z), with its CPML terms."""
    ny, nz = hz.shape[1] - 2, hy.shape[2] - 2
    (ymap, yb, yc, ypsi, ycb), (zk, zb, zc, zpsi, zcb) = terms[6], terms[7]
    k0, k1 = lo[2], hi[2] + 1
    for j in range(lo[1], hi[1] + 1):
        line = i * (ny + 1) + j
        for r in range(xs[line], xs[line + 1]):
            first, stop = _run(r, xs[line + 1], xk, nz + 1, lo[2], hi[2])
            ca, cb = xa[xc[r]], xb[xc[r]]
            # views of the run indexed from 0: numba then knows no index is negative,
            # checks none and the loop vectorizes (4x faster than k in range(first, stop))
            e, dz = ex[i, j, first:stop], idzd[first:stop]
            hz1, hz0 = hz[i + 1, j + 1, first:stop], hz[i + 1, j, first:stop]
            hy1, hy0 = hy[i + 1, j, first + 1:stop + 1], hy[i + 1, j, first:stop]
            for k in range(stop - first):
                e[k] = ca * e[k] + cb * ((hz1[k] - hz0[k]) * idyd[j]
                                         - (hy1[k] - hy0[k]) * dz[k])
        s = ymap[j]
        if s >= 0:
            _absorb_e(ex[i, j, k0:k1], hz[i + 1, j + 1, k0:k1], hz[i + 1, j, k0:k1],
                      ypsi[i, s, k0:k1], yb[s], yc[s], ycb[i, s, k0:k1], 1.0)
        for t in range(zk.size):
            k = zk[t]
            value = zb[t] * zpsi[i, j, t] + zc[t] * (hy[i + 1, j, k + 1] - hy[i + 1, j, k])
            zpsi[i, j, t] = value
            ex[i, j, k] -= zcb[i, j, t] * value


@numba.njit(inline="always")
def _e_node(i: int, ey: np.ndarray, ez: np.ndarray, hx: np.ndarray, hy: np.ndarray,
            hz: np.ndarray, idxd: np.ndarray, idyd: np.ndarray, idzd: np.ndarray,
            lo: np.ndarray, hi: np.ndarray,
            ys: np.ndarray, yk: np.ndarray, yc: np.ndarray, ya: np.ndarray, yb: np.ndarray,
            zs: np.ndarray, zk: np.ndarray, zc: np.ndarray, za: np.ndarray, zb: np.ndarray,
            terms: Any) -> None:
    """ey and ez on node plane i (runs of one class along z), with their CPML terms."""
    ny, nz = ey.shape[1], ez.shape[2]
    (pk, pb, pc, ppsi, pcb), (xmap, xb, xc, xpsi, xcb) = terms[8], terms[9]
    (x2map, x2b, x2c, x2psi, x2cb), (ymap, mb, mc, ypsi, ycb) = terms[10], terms[11]
    k0, k1 = lo[2], hi[2] + 1
    for j in range(ny):
        line = i * ny + j
        for r in range(ys[line], ys[line + 1]):
            first, stop = _run(r, ys[line + 1], yk, nz + 1, lo[2], hi[2])
            ca, cb = ya[yc[r]], yb[yc[r]]
            e, dz = ey[i, j, first:stop], idzd[first:stop]
            hx1, hx0 = hx[i, j + 1, first + 1:stop + 1], hx[i, j + 1, first:stop]
            hz1, hz0 = hz[i + 1, j + 1, first:stop], hz[i, j + 1, first:stop]
            for k in range(stop - first):
                e[k] = ca * e[k] + cb * ((hx1[k] - hx0[k]) * dz[k]
                                         - (hz1[k] - hz0[k]) * idxd[i])
        for t in range(pk.size):
            k = pk[t]
            value = pb[t] * ppsi[i, j, t] + pc[t] * (hx[i, j + 1, k + 1] - hx[i, j + 1, k])
            ppsi[i, j, t] = value
            ey[i, j, k] += pcb[i, j, t] * value
        s = xmap[i]
        if s >= 0:
            _absorb_e(ey[i, j, k0:k1], hz[i + 1, j + 1, k0:k1], hz[i, j + 1, k0:k1],
                      xpsi[s, j, k0:k1], xb[s], xc[s], xcb[s, j, k0:k1], -1.0)
    for j in range(lo[1], hi[1] + 1):
        line = i * (ny + 1) + j
        for r in range(zs[line], zs[line + 1]):
            first, stop = _run(r, zs[line + 1], zk, nz, 0, nz - 1)
            ca, cb = za[zc[r]], zb[zc[r]]
            e = ez[i, j, first:stop]
            hy1, hy0 = hy[i + 1, j, first + 1:stop + 1], hy[i, j, first + 1:stop + 1]
            hx1, hx0 = hx[i, j + 1, first + 1:stop + 1], hx[i, j, first + 1:stop + 1]
            for k in range(stop - first):
                e[k] = ca * e[k] + cb * ((hy1[k] - hy0[k]) * idxd[i]
                                         - (hx1[k] - hx0[k]) * idyd[j])
        s = x2map[i]
        if s >= 0:
            _absorb_e(ez[i, j], hy[i + 1, j, 1:nz + 1], hy[i, j, 1:nz + 1], x2psi[s, j],
                      x2b[s], x2c[s], x2cb[s, j], 1.0)
        s = ymap[j]
        if s >= 0:
            _absorb_e(ez[i, j], hx[i, j + 1, 1:nz + 1], hx[i, j, 1:nz + 1], ypsi[i, s],
                      mb[s], mc[s], ycb[i, s], -1.0)


H_ONLY, E_ONLY, BOTH, FIRST_NODES = 1, 2, 3, 4  # what `sweep` updates


@numba.njit(parallel=True, cache=True)
def sweep(ex: np.ndarray, ey: np.ndarray, ez: np.ndarray, hx: np.ndarray, hy: np.ndarray,
          hz: np.ndarray, idx: np.ndarray, idy: np.ndarray, idz: np.ndarray, ch: float,
          idxd: np.ndarray, idyd: np.ndarray, idzd: np.ndarray, lo: np.ndarray, hi: np.ndarray,
          xs: np.ndarray, xk: np.ndarray, xc: np.ndarray, xa: np.ndarray, xb: np.ndarray,
          ys: np.ndarray, yk: np.ndarray, yc: np.ndarray, ya: np.ndarray, yb: np.ndarray,
          zs: np.ndarray, zk: np.ndarray, zc: np.ndarray, za: np.ndarray, zb: np.ndarray,
          terms: Any, starts: np.ndarray, mode: int) -> None:
    """A time step's updates, plane by plane, block b of planes starts[b] .. starts[b+1]-1 on
    one thread: H(n+1/2) = H(n-1/2) - dt/mu curl E(n) (H_ONLY); E(n+1) = ca E(n) + cb
    curl H(n+1/2) over the edges from `lo` to `hi`, each component's coefficients constant
    along a run (E_ONLY; materials.EdgeRuns: start, k0, class, ca, cb per class); or both in
    one sweep, H then E plane by plane (BOTH), but for each block's first node plane, which
    the block before reads while it sweeps: FIRST_NODES does them after. BOTH then
    FIRST_NODES does the same operations on the same values as H_ONLY then E_ONLY: bit for
    bit the same fields. `terms`: the CPML's twelve (pml.terms)."""
    nx = ex.shape[0]
    # a tuple of arrays cannot enter a parallel loop (numba's gufuncs take arrays): in as
    # arrays, rebuilt as a tuple inside
    ((t0m, t0b, t0c, t0p, t0e), (t1m, t1b, t1c, t1p, t1e), (t2m, t2b, t2c, t2p, t2e), (t3m, t3b,
     t3c, t3p, t3e), (t4m, t4b, t4c, t4p, t4e), (t5m, t5b, t5c, t5p, t5e), (t6m, t6b, t6c, t6p,
     t6e), (t7m, t7b, t7c, t7p, t7e), (t8m, t8b, t8c, t8p, t8e), (t9m, t9b, t9c, t9p, t9e),
     (t10m, t10b, t10c, t10p, t10e), (t11m, t11b, t11c, t11p, t11e)) = terms
    for block in prange(starts.size - 1):
        inside = ((t0m, t0b, t0c, t0p, t0e), (t1m, t1b, t1c, t1p, t1e), (t2m, t2b, t2c, t2p,
            t2e), (t3m, t3b, t3c, t3p, t3e), (t4m, t4b, t4c, t4p, t4e), (t5m, t5b, t5c, t5p,
            t5e), (t6m, t6b, t6c, t6p, t6e), (t7m, t7b, t7c, t7p, t7e), (t8m, t8b, t8c, t8p,
            t8e), (t9m, t9b, t9c, t9p, t9e), (t10m, t10b, t10c, t10p, t10e), (t11m, t11b, t11c,
            t11p, t11e))
        first, stop = starts[block], starts[block + 1]
        if mode == FIRST_NODES:
            if lo[0] <= first <= hi[0]:
                _e_node(first, ey, ez, hx, hy, hz, idxd, idyd, idzd, lo, hi, ys, yk, yc, ya,
                        yb, zs, zk, zc, za, zb, inside)
            continue
        for i in range(first, stop):
            if mode != E_ONLY:
                _h_node(i, ey, ez, hx, idy, idz, ch, inside)
                if i < nx:
                    _h_cell(i, ex, ey, ez, hy, hz, idx, idy, idz, ch, inside)
            if mode == H_ONLY:
                continue
            if i < nx:
                _e_cell(i, ex, hy, hz, idyd, idzd, lo, hi, xs, xk, xc, xa, xb, inside)
            if (mode == E_ONLY or i > first) and lo[0] <= i <= hi[0]:
                _e_node(i, ey, ez, hx, hy, hz, idxd, idyd, idzd, lo, hi, ys, yk, yc, ya, yb,
                        zs, zk, zc, za, zb, inside)
