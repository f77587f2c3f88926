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
plane i (ex) and node plane i (ey, ez). `leap` does H, or E, or several whole steps in one
sweep, temporally blocked (a plane's steps while it is in cache). The CPML's
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


ONE = np.uint64(1)


@numba.njit(inline="always")
def _run(r: int, end: int, k0: np.ndarray, nk: int, first: int, last: int
         ) -> tuple[np.uint64, np.uint64]:
    """Run r's k range, within first..last, as unsigned indices: numba then checks none for
    being negative and the loop vectorizes (1.3x faster at 100 cells a row than views of the
    run, 4x faster than signed indices)."""
    stop = k0[r + 1] if r + 1 < end else nk
    return np.uint64(max(k0[r], first)), np.uint64(min(stop, last + 1))


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
            for k in range(first, stop):
                ex[i, j, k] = ca * ex[i, j, k] + cb * (
                    (hz[i + 1, j + 1, k] - hz[i + 1, j, k]) * idyd[j]
                    - (hy[i + 1, j, k + ONE] - hy[i + 1, j, k]) * idzd[k])
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
            for k in range(first, stop):
                ey[i, j, k] = ca * ey[i, j, k] + cb * (
                    (hx[i, j + 1, k + ONE] - hx[i, j + 1, k]) * idzd[k]
                    - (hz[i + 1, j + 1, k] - hz[i, j + 1, k]) * idxd[i])
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
            for k in range(first, stop):
                ez[i, j, k] = ca * ez[i, j, k] + cb * (
                    (hy[i + 1, j, k + ONE] - hy[i, j, k + ONE]) * idxd[i]
                    - (hx[i, j + 1, k + ONE] - hx[i, j, k + ONE]) * idyd[j])
        s = x2map[i]
        if s >= 0:
            _absorb_e(ez[i, j], hy[i + 1, j, 1:nz + 1], hy[i, j, 1:nz + 1], x2psi[s, j],
                      x2b[s], x2c[s], x2cb[s, j], 1.0)
        s = ymap[j]
        if s >= 0:
            _absorb_e(ez[i, j], hx[i, j + 1, 1:nz + 1], hx[i, j, 1:nz + 1], ypsi[i, s],
                      mb[s], mc[s], ycb[i, s], -1.0)


@numba.njit(inline="always")
def _tap(i: int, s: int, ex: np.ndarray, ey: np.ndarray, ez: np.ndarray, taps: np.ndarray,
         tapped: np.ndarray) -> None:
    """Copy the boxes of E that the monitors watch, where they cross plane i, into row s of
    `tapped` (E at the step before plane i is advanced). A tap: component, x0, x1, y0, y1,
    z0, z1, the box's first column in `tapped`; the box flattened in C order."""
    for t in range(taps.shape[0]):
        x0, x1, y0, y1, z0, z1 = taps[t, 1], taps[t, 2], taps[t, 3], taps[t, 4], taps[t, 5], \
            taps[t, 6]
        if x0 <= i < x1:
            field = ex if taps[t, 0] == 0 else ey if taps[t, 0] == 1 else ez
            column = taps[t, 7] + (i - x0) * (y1 - y0) * (z1 - z0)
            for j in range(y0, y1):
                for k in range(z0, z1):
                    tapped[s, column] = field[i, j, k]
                    column += 1


@numba.njit(inline="always")
def _drive(i: int, s: int, ex: np.ndarray, ey: np.ndarray, ez: np.ndarray,
           sources: np.ndarray, scales: np.ndarray, waves: np.ndarray) -> None:
    """Add the step's source currents on plane i's edges (after their update). A source:
    component, i, j, k, its waveform's row in `waves` (one value per step)."""
    for q in range(sources.shape[0]):
        if sources[q, 1] == i:
            field = ex if sources[q, 0] == 0 else ey if sources[q, 0] == 1 else ez
            field[i, sources[q, 2], sources[q, 3]] += scales[q] * waves[sources[q, 4], s]


H_ONLY, E_ONLY, BOTH = 1, 2, 3  # what `leap` updates


@numba.njit(parallel=True, cache=True)
def leap(ex: np.ndarray, ey: np.ndarray, ez: np.ndarray, hx: np.ndarray, hy: np.ndarray,
         hz: np.ndarray, idx: np.ndarray, idy: np.ndarray, idz: np.ndarray, ch: float,
         idxd: np.ndarray, idyd: np.ndarray, idzd: np.ndarray, lo: np.ndarray, hi: np.ndarray,
         xs: np.ndarray, xk: np.ndarray, xc: np.ndarray, xa: np.ndarray, xb: np.ndarray,
         ys: np.ndarray, yk: np.ndarray, yc: np.ndarray, ya: np.ndarray, yb: np.ndarray,
         zs: np.ndarray, zk: np.ndarray, zc: np.ndarray, za: np.ndarray, zb: np.ndarray,
         terms: Any, starts: np.ndarray, levels: int, blocks: int, mode: int,
         sources: np.ndarray, scales: np.ndarray, waves: np.ndarray, taps: np.ndarray,
         tapped: np.ndarray) -> None:
    """`blocks` * `levels` time steps (BOTH), or one step's H (H_ONLY: H(n+1/2) = H(n-1/2)
    - dt/mu curl E(n)) or E (E_ONLY: E(n+1) = ca E(n) + cb curl H(n+1/2) over the edges from
    `lo` to `hi`, each component's coefficients constant along a run: materials.EdgeRuns).
    `terms`: the CPML's twelve (pml.terms). Monitors read E through `taps` before each step,
    sources add to it after (see _tap, _drive).

    BOTH is temporally blocked: the x planes are cut into tiles at `starts`; a tile takes
    `levels` steps at once as a wavefront, at position p the plane p - l to step l (each
    plane's H then E), so a plane is read from memory once for all its steps. A tile leans
    back one plane per step, so that it needs only planes its left neighbour has done, and its
    right neighbour's of the block of steps before: tiles on one anti-diagonal (tile + 2 *
    block) run in parallel. Each plane sees the same operations on the same values as in
    step-by-step updates: the fields are bit for bit the same. Tiles must be wider than
    `levels` + 1 planes."""
    nx = ex.shape[0]
    tiles = starts.size - 1
    # a tuple of arrays cannot enter a parallel loop (numba's gufuncs take arrays): in as
    # arrays, rebuilt as a tuple inside
    ((t0m, t0b, t0c, t0p, t0e), (t1m, t1b, t1c, t1p, t1e), (t2m, t2b, t2c, t2p, t2e), (t3m, t3b,
     t3c, t3p, t3e), (t4m, t4b, t4c, t4p, t4e), (t5m, t5b, t5c, t5p, t5e), (t6m, t6b, t6c, t6p,
     t6e), (t7m, t7b, t7c, t7p, t7e), (t8m, t8b, t8c, t8p, t8e), (t9m, t9b, t9c, t9p, t9e),
     (t10m, t10b, t10c, t10p, t10e), (t11m, t11b, t11c, t11p, t11e)) = terms
    ready = np.empty(tiles, np.int64)
    for diagonal in range(tiles + 2 * (blocks - 1) if mode == BOTH else 1):
        count = 0
        for tile in range(tiles):
            back = diagonal - tile
            if mode != BOTH or (back % 2 == 0 and 0 <= back // 2 < blocks):
                ready[count] = tile
                count += 1
        for n in prange(count):
            inside = ((t0m, t0b, t0c, t0p, t0e), (t1m, t1b, t1c, t1p, t1e), (t2m, t2b, t2c,
                t2p, t2e), (t3m, t3b, t3c, t3p, t3e), (t4m, t4b, t4c, t4p, t4e), (t5m, t5b, t5c,
                t5p, t5e), (t6m, t6b, t6c, t6p, t6e), (t7m, t7b, t7c, t7p, t7e), (t8m, t8b, t8c,
                t8p, t8e), (t9m, t9b, t9c, t9p, t9e), (t10m, t10b, t10c, t10p, t10e), (t11m,
                t11b, t11c, t11p, t11e))
            tile = ready[n]
            first = levels * ((diagonal - tile) // 2) if mode == BOTH else 0  # its first step
            stop = starts[tile + 1] + (levels - 1 if tile == tiles - 1 else 0)
            for p in range(starts[tile], stop):
                for level in range(levels):
                    i, s = p - level, first + level
                    if i < 0 or i > nx:
                        continue
                    if mode != E_ONLY:
                        _tap(i, s, ex, ey, ez, taps, tapped)
                        _h_node(i, ey, ez, hx, idy, idz, ch, inside)
                        if i < nx:
                            _h_cell(i, ex, ey, ez, hy, hz, idx, idy, idz, ch, inside)
                    if mode != H_ONLY:
                        if i < nx:
                            _e_cell(i, ex, hy, hz, idyd, idzd, lo, hi, xs, xk, xc, xa, xb,
                                    inside)
                        if lo[0] <= i <= hi[0]:
                            _e_node(i, ey, ez, hx, hy, hz, idxd, idyd, idzd, lo, hi, ys, yk,
                                    yc, ya, yb, zs, zk, zc, za, zb, inside)
                        _drive(i, s, ex, ey, ez, sources, scales, waves)
