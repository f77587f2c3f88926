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
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange


@numba.njit(parallel=True, cache=True)
def update_h(ex: np.ndarray, ey: np.ndarray, ez: np.ndarray, hx: np.ndarray, hy: np.ndarray,
             hz: np.ndarray, idx: np.ndarray, idy: np.ndarray, idz: np.ndarray, ch: float,
             zk: np.ndarray, zb: np.ndarray, zc: np.ndarray, psx: np.ndarray,
             psy: np.ndarray) -> None:
    """H(n+1/2) = H(n-1/2) - dt/mu curl E(n), over every H (not the ghosts). The CPML's
    terms across z are done here, on rows already in cache (a separate pass over them cost
    as much as the update): at the cell centres zk, psi = zb psi + zc dE/dz (psx for hx,
    psy for hy, indexed [i, j, s] for zk[s]); none when zk is empty."""
    nx, ny, nz = ex.shape[0], ey.shape[1], ez.shape[2]
    for i in prange(nx + 1):
        for j in range(ny):
            for k in range(nz):
                hx[i, j + 1, k + 1] -= ch * ((ez[i, j + 1, k] - ez[i, j, k]) * idy[j]
                                             - (ey[i, j, k + 1] - ey[i, j, k]) * idz[k])
            for s in range(zk.size):
                k = zk[s]
                value = zb[s] * psx[i, j, s] + zc[s] * (ey[i, j, k + 1] - ey[i, j, k])
                psx[i, j, s] = value
                hx[i, j + 1, k + 1] += ch * value
    for i in prange(nx):
        for j in range(ny + 1):
            for k in range(nz):
                hy[i + 1, j, k + 1] -= ch * ((ex[i, j, k + 1] - ex[i, j, k]) * idz[k]
                                             - (ez[i + 1, j, k] - ez[i, j, k]) * idx[i])
            for s in range(zk.size):
                k = zk[s]
                value = zb[s] * psy[i, j, s] + zc[s] * (ex[i, j, k + 1] - ex[i, j, k])
                psy[i, j, s] = value
                hy[i + 1, j, k + 1] -= ch * value
        for j in range(ny):
            for k in range(nz + 1):
                hz[i + 1, j + 1, k] -= ch * ((ey[i + 1, j, k] - ey[i, j, k]) * idx[i]
                                             - (ex[i, j + 1, k] - ex[i, j, k]) * idy[j])


@numba.njit(inline="always")
def _run(r: int, end: int, k0: np.ndarray, nk: int, first: int, last: int) -> tuple[int, int]:
    """Run r's k range, within first..last."""
    stop = k0[r + 1] if r + 1 < end else nk
    return max(k0[r], first), min(stop, last + 1)


@numba.njit(parallel=True, cache=True)
def update_e(ex: np.ndarray, ey: np.ndarray, ez: np.ndarray, hx: np.ndarray, hy: np.ndarray,
             hz: np.ndarray, idxd: np.ndarray, idyd: np.ndarray, idzd: np.ndarray,
             lo: np.ndarray, hi: np.ndarray,
             xs: np.ndarray, xk: np.ndarray, xc: np.ndarray, xa: np.ndarray, xb: np.ndarray,
             ys: np.ndarray, yk: np.ndarray, yc: np.ndarray, ya: np.ndarray, yb: np.ndarray,
             zs: np.ndarray, zk: np.ndarray, zc: np.ndarray, za: np.ndarray, zb: np.ndarray,
             pk: np.ndarray, pb: np.ndarray, pc: np.ndarray, psx: np.ndarray, psy: np.ndarray,
             cbx: np.ndarray, cby: np.ndarray) -> None:
    """E(n+1) = ca E(n) + cb curl H(n+1/2) over the edges from `lo` to `hi` (inclusive),
    each component's coefficients constant along a run (materials.EdgeRuns: start, k0,
    class, ca, cb per class). The CPML's terms across z as in update_h, at the nodes pk
    (psx, psy for ex, ey; cbx, cby their edges' cb)."""
    nx, ny, nz = ex.shape[0], ey.shape[1], ez.shape[2]
    for i in prange(nx):
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
            for s in range(pk.size):
                k = pk[s]
                value = pb[s] * psx[i, j, s] + pc[s] * (hy[i + 1, j, k + 1] - hy[i + 1, j, k])
                psx[i, j, s] = value
                ex[i, j, k] -= cbx[i, j, s] * value
    for i in prange(lo[0], hi[0] + 1):
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
            for s in range(pk.size):
                k = pk[s]
                value = pb[s] * psy[i, j, s] + pc[s] * (hx[i, j + 1, k + 1] - hx[i, j + 1, k])
                psy[i, j, s] = value
                ey[i, j, k] += cby[i, j, s] * value
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


@numba.njit(cache=True)
def pml_term_small(target: np.ndarray, source: np.ndarray, psi: np.ndarray, b: np.ndarray,
                   c: np.ndarray, coef: np.ndarray, origin: np.ndarray, t_off: np.ndarray,
                   s_off: np.ndarray, axis: int) -> None:
    """One CPML curl term over its slab (pml.py): psi = b psi + c d(source)/d(axis), then
    target += coef psi. psi[p, q, r] is the point origin + (p, q, r); target is read at that
    point + t_off, source's forward difference along `axis` at that point + s_off; b and c are
    indexed from the slab's start along `axis`; coef has psi's shape or (1, 1, 1) for one
    value everywhere. One thread, plain indices: for a small slab threads and row views cost
    more than they save (measured 3x faster than pml_term_rows on a 68x68x33 grid's slabs)."""
    n0, n1, n2 = psi.shape
    d0, d1, d2 = int(axis == 0), int(axis == 1), int(axis == 2)
    i0, j0, k0 = origin[0], origin[1], origin[2]
    si, sj, sk = i0 + s_off[0], j0 + s_off[1], k0 + s_off[2]
    ti, tj, tk = i0 + t_off[0], j0 + t_off[1], k0 + t_off[2]
    uniform = coef.size == 1
    for p in range(n0):
        for q in range(n1):
            for r in range(n2):
                m = p if axis == 0 else (q if axis == 1 else r)
                value = b[m] * psi[p, q, r] + c[m] * (
                    source[si + p + d0, sj + q + d1, sk + r + d2] - source[si + p, sj + q, sk + r])
                psi[p, q, r] = value
                scale = coef[0, 0, 0] if uniform else coef[p, q, r]
                target[ti + p, tj + q, tk + r] += scale * value




@numba.njit(parallel=True, cache=True)
def pml_term_rows(target: np.ndarray, source: np.ndarray, psi: np.ndarray, b: np.ndarray,
                  c: np.ndarray, coef: np.ndarray, origin: np.ndarray, t_off: np.ndarray,
                  s_off: np.ndarray, axis: int) -> None:
    """pml_term_small for a large slab, on all threads: each row along z a view indexed
    from 0, so its loop vectorizes (measured on a 200^3 grid's slabs: 2x faster across x
    and y, 1.5x across z)."""
    n0, n1, n2 = psi.shape
    d0, d1, d2 = int(axis == 0), int(axis == 1), int(axis == 2)
    sk, tk = origin[2] + s_off[2], origin[2] + t_off[2]
    uniform = coef.size == 1
    for slab_row in prange(n0):
        p = np.int64(slab_row)
        i = origin[0] + p
        for q in range(n1):
            j = origin[1] + q
            si, sj = i + s_off[0], j + s_off[1]
            low = source[si, sj, sk:sk + n2]
            high = source[si + d0, sj + d1, sk + d2:sk + d2 + n2]
            out = target[i + t_off[0], j + t_off[1], tk:tk + n2]
            row = psi[p, q]
            if axis == 2:
                bz, cz = b[:n2], c[:n2]
                scale = coef[0, 0, :1] if uniform else coef[p, q]
                for r in range(n2):
                    value = bz[r] * row[r] + cz[r] * (high[r] - low[r])
                    row[r] = value
                    out[r] += scale[0 if uniform else r] * value
                continue
            m = p if axis == 0 else q
            bm, cm = b[m], c[m]
            if uniform:
                s0 = coef[0, 0, 0]
                for r in range(n2):
                    value = bm * row[r] + cm * (high[r] - low[r])
                    row[r] = value
                    out[r] += s0 * value
            else:
                scale = coef[p, q]
                for r in range(n2):
                    value = bm * row[r] + cm * (high[r] - low[r])
                    row[r] = value
                    out[r] += scale[r] * value
