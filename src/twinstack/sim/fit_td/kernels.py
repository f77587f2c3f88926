"""The leapfrog's loops (numba, parallel over x). Every field lives in a padded store of
(nx + 2) planes of (ny + 2) rows of (nz + 2) values, so that a plane is one flat array in which
a neighbour along y or z is a fixed offset for all six components: each bulk update is one loop
over a whole plane (rows of 100 cost ~70 ns each in loop set-up and tails, more than their cells
at that length). The positions such a loop writes outside a component's real edges or faces
(ghosts, PEC walls, padding) are set back to 0 after it (`_clear`). The E update walks runs of
one material class along the flat plane (materials.EdgeRuns), so its inner loop has scalar
coefficients; the medium is non-magnetic and uniform for H. The spacings enter as inverse
lengths: a scalar along a uniform axis, else a plane of them (`_at`).

Indices (the store's, the same as the public views' in solver.py) for nx * ny * nz cells: ex
(i, j, k) for i < nx, j <= ny, k <= nz, and so on; H has a ghost layer on both sides of the two
axes its curl is taken along, always 0: the H of cell face (i, j, k) is hx[i, j+1, k+1],
hy[i+1, j, k+1], hz[i+1, j+1, k]. The ghosts make a PMC wall (tangential H = 0 on it) by just
updating E on it; on a PEC wall tangential E stays 0. `lo`/`hi`: the first and last E index
along x, y, z updated (0 and n on PMC walls, 1 and n-1 on PEC ones).

The loops are per plane of x: H on node plane i (hx) and cell plane i (hy, hz), E on cell
plane i (ex) and node plane i (ey, ez). `leap` does H, or E, or several whole steps in one
sweep, temporally blocked (a plane's steps while it is in cache). The CPML's curl terms
(pml.py: twelve, each a map or list of the slab's indices, b, c, psi, and for E the edges'
cb) are done on the rows the update has just written: a separate pass over them cost as much
as the update. Each plane's bulk loop is a function of its own, not inlined: inlined into the
wavefront (whose plane index is p - level) numba's loops ran 3x slower, measured.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import prange, types
from numba.extending import overload

U = np.uint64  # flat indices unsigned: numba then checks none for being negative, and the
# loops vectorize (4x faster than signed indices)


def _at(factor: Any, q: Any) -> Any:
    """An inverse spacing at flat position q: the scalar of a uniform axis, else the plane's."""
    raise NotImplementedError("only inside numba")


@overload(_at, inline="always")
def _at_overload(factor: Any, q: Any) -> Any:
    def element(factor: Any, q: Any) -> Any:
        return factor[q]

    def scalar(factor: Any, q: Any) -> Any:
        return factor

    return element if isinstance(factor, types.Array) else scalar


@numba.njit(inline="always")
def _clear(plane: np.ndarray, row0: int, row1: int, k0: int, k1: int, width: int) -> None:
    """Zero what a flat loop over rows row0..row1 (columns k0..k1 of each) wrote between
    them: the columns after k1 of one row and before k0 of the next."""
    for row in range(row0, row1):
        for q in range(row * width + k1 + 1, (row + 1) * width + k0):
            plane[q] = 0


@numba.njit(cache=True)
def _hx_plane(hx: np.ndarray, ey: np.ndarray, ez: np.ndarray, ch: float, fy: Any, fz: Any,
              ny: int, nz: int) -> None:
    """hx on a node plane, faces (j, k) at flat (j+1) w + k+1 (w = nz + 2)."""
    w = U(nz + 2)
    for r in range(U(0), U((ny - 1) * (nz + 2) + nz)):
        q = r + w + U(1)
        hx[q] -= ch * ((ez[r + w] - ez[r]) * _at(fy, q) - (ey[r + U(1)] - ey[r]) * _at(fz, q))
    _clear(hx, 1, ny, 1, nz, nz + 2)


@numba.njit(cache=True)
def _h_planes(hx: np.ndarray, hy: np.ndarray, hz: np.ndarray, ex: np.ndarray, ey0: np.ndarray,
              ey1: np.ndarray, ez0: np.ndarray, ez1: np.ndarray, ch: float, fy: Any,
              fz: Any, fx: float, ny: int, nz: int) -> None:
    """hx on node plane i (as _hx_plane) with hy and hz on cell plane i (E on node planes i
    and i + 1: ey0, ey1, ez0, ez1), faces (j, k) of hy at flat j w + k+1, of hz at
    (j+1) w + k. One loop for the three (where all three have faces) reads E once for them:
    fewer streams through the caches, 7-11 % faster on two threads than a loop each."""
    w = U(nz + 2)
    for f in range(U(1), w + U(1)):  # hy's first row, before hx's and hz's
        hy[f] -= ch * ((ex[f] - ex[f - U(1)]) * _at(fz, f)
                       - (ez1[f - U(1)] - ez0[f - U(1)]) * fx)
    hz[w] -= ch * ((ey1[0] - ey0[0]) * fx - (ex[w] - ex[0]) * _at(fy, w))
    for r in range(U(0), U((ny - 1) * (nz + 2) + nz)):
        q, qk, qj = r + w + U(1), r + w, r + U(1)  # at k - 1, at j - 1
        hx[q] -= ch * ((ez0[qk] - ez0[r]) * _at(fy, q) - (ey0[qj] - ey0[r]) * _at(fz, q))
        hy[q] -= ch * ((ex[q] - ex[qk]) * _at(fz, q) - (ez1[qk] - ez0[qk]) * fx)
        hz[q] -= ch * ((ey1[qj] - ey0[qj]) * fx - (ex[q] - ex[qj]) * _at(fy, q))
    _clear(hx, 1, ny, 1, nz, nz + 2)
    _clear(hy, 0, ny, 1, nz, nz + 2)
    _clear(hz, 1, ny, 0, nz, nz + 2)


@numba.njit(inline="always")
def _span(r: int, end: int, q0: np.ndarray, size: int, first: int, last: int
          ) -> tuple[np.uint64, np.uint64]:
    """Run r's flat range, within first..last."""
    stop = q0[r + 1] if r + 1 < end else size
    return U(max(q0[r], first)), U(min(stop, last + 1))


@numba.njit(cache=True)
def _ex_plane(ex: np.ndarray, hy: np.ndarray, hz: np.ndarray, fy: Any, fz: Any,
              runs: tuple[int, int], q0: np.ndarray, klass: np.ndarray, ca: np.ndarray,
              cb: np.ndarray, lo: np.ndarray, hi: np.ndarray, nz: int) -> None:
    """ex on a cell plane (H of cell plane i + 1 in the store): edge (j, k) at flat j w + k."""
    w = nz + 2
    first, last = lo[1] * w + lo[2], hi[1] * w + hi[2]
    for r in range(runs[0], runs[1]):
        a, b = _span(r, runs[1], q0, ex.size, first, last)
        c, d = ca[klass[r]], cb[klass[r]]
        for q in range(a, b):
            ex[q] = c * ex[q] + d * ((hz[q + U(w)] - hz[q]) * _at(fy, q)
                                     - (hy[q + U(1)] - hy[q]) * _at(fz, q))
    _clear(ex, lo[1], hi[1], lo[2], hi[2], w)


@numba.njit(cache=True)
def _ey_plane(ey: np.ndarray, hx: np.ndarray, hz0: np.ndarray, hz1: np.ndarray, fz: Any,
              fx: float, runs: tuple[int, int], q0: np.ndarray, klass: np.ndarray,
              ca: np.ndarray, cb: np.ndarray, lo: np.ndarray, hi: np.ndarray, ny: int,
              nz: int) -> None:
    """ey on a node plane."""
    w = nz + 2
    first, last = lo[2], (ny - 1) * w + hi[2]
    for r in range(runs[0], runs[1]):
        a, b = _span(r, runs[1], q0, ey.size, first, last)
        c, d = ca[klass[r]], cb[klass[r]]
        for q in range(a, b):
            p = q + U(w)
            ey[q] = c * ey[q] + d * ((hx[p + U(1)] - hx[p]) * _at(fz, q) - (hz1[p] - hz0[p]) * fx)
    _clear(ey, 0, ny - 1, lo[2], hi[2], w)


@numba.njit(cache=True)
def _ez_plane(ez: np.ndarray, hx: np.ndarray, hy0: np.ndarray, hy1: np.ndarray, fy: Any,
              fx: float, runs: tuple[int, int], q0: np.ndarray, klass: np.ndarray,
              ca: np.ndarray, cb: np.ndarray, lo: np.ndarray, hi: np.ndarray, nz: int) -> None:
    """ez on a node plane."""
    w = nz + 2
    first, last = lo[1] * w, hi[1] * w + nz - 1
    for r in range(runs[0], runs[1]):
        a, b = _span(r, runs[1], q0, ez.size, first, last)
        c, d = ca[klass[r]], cb[klass[r]]
        for q in range(a, b):
            p = q + U(1)
            ez[q] = c * ez[q] + d * ((hy1[p] - hy0[p]) * fx - (hx[p + U(w)] - hx[p]) * _at(fy, q))
    _clear(ez, lo[1], hi[1], 0, nz - 1, w)


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


# The four CPML slab updates below are called, not inlined, into `leap`'s parallel loop:
# inlined, numba took twice as long to compile each signature (~80 s against ~45 s here),
# for no measurable speed (they touch thin slabs once per plane).
@numba.njit
def _h_node(i: int, ey: np.ndarray, ez: np.ndarray, hx: np.ndarray, ch: float,
            terms: Any) -> None:
    """hx's CPML terms across y and z on node plane i. Each row loop runs only where its
    term has a slab (a check on every row of a plane cost ~20 % of a vacuum step)."""
    ny, nz = hx.shape[1] - 2, hx.shape[2] - 2
    (ymap, yb, yc, ypsi, _), (zk, zb, zc, zpsi, _) = terms[0], terms[1]
    for j in range(ny if ypsi.shape[1] else 0):
        s = ymap[j]
        if s >= 0:
            _absorb(hx[i, j + 1, 1:nz + 1], ez[i, j + 1], ez[i, j], ypsi[i, s], yb[s], yc[s],
                    -ch)
    for j in range(ny if zk.size else 0):
        for t in range(zk.size):
            k = zk[t]
            value = zb[t] * zpsi[i, j, t] + zc[t] * (ey[i, j, k + 1] - ey[i, j, k])
            zpsi[i, j, t] = value
            hx[i, j + 1, k + 1] += ch * value


@numba.njit
def _h_cell(i: int, ex: np.ndarray, ey: np.ndarray, ez: np.ndarray, hy: np.ndarray,
            hz: np.ndarray, ch: float, terms: Any) -> None:
    """hy's and hz's CPML terms on cell plane i."""
    ny, nz = hy.shape[1] - 2, hy.shape[2] - 2
    (zk, zb, zc, zpsi, _), (xmap, xb, xc, xpsi, _) = terms[2], terms[3]
    (x2map, x2b, x2c, x2psi, _), (ymap, yb, yc, ypsi, _) = terms[4], terms[5]
    for j in range(ny + 1 if zk.size else 0):
        for t in range(zk.size):
            k = zk[t]
            value = zb[t] * zpsi[i, j, t] + zc[t] * (ex[i, j, k + 1] - ex[i, j, k])
            zpsi[i, j, t] = value
            hy[i + 1, j, k + 1] -= ch * value
    s = xmap[i]
    for j in range(ny + 1 if s >= 0 else 0):
        _absorb(hy[i + 1, j, 1:nz + 1], ez[i + 1, j], ez[i, j], xpsi[s, j], xb[s], xc[s], ch)
    s = x2map[i]
    for j in range(ny if s >= 0 else 0):
        _absorb(hz[i + 1, j + 1], ey[i + 1, j], ey[i, j], x2psi[s, j], x2b[s], x2c[s], -ch)
    for j in range(ny if ypsi.shape[1] else 0):
        s = ymap[j]
        if s >= 0:
            _absorb(hz[i + 1, j + 1], ex[i, j + 1], ex[i, j], ypsi[i, s], yb[s], yc[s], ch)


@numba.njit
def _e_cell(i: int, ex: np.ndarray, hy: np.ndarray, hz: np.ndarray, lo: np.ndarray,
            hi: np.ndarray, terms: Any) -> None:
    """ex's CPML terms on cell plane i."""
    (ymap, yb, yc, ypsi, ycb), (zk, zb, zc, zpsi, zcb) = terms[6], terms[7]
    k0, k1 = lo[2], hi[2] + 1
    for j in range(lo[1], hi[1] + 1 if ypsi.shape[1] else lo[1]):
        s = ymap[j]
        if s >= 0:
            _absorb_e(ex[i, j, k0:k1], hz[i + 1, j + 1, k0:k1], hz[i + 1, j, k0:k1],
                      ypsi[i, s, k0:k1], yb[s], yc[s], ycb[i, s, k0:k1], 1.0)
    for j in range(lo[1], hi[1] + 1 if zk.size else lo[1]):
        for t in range(zk.size):
            k = zk[t]
            value = zb[t] * zpsi[i, j, t] + zc[t] * (hy[i + 1, j, k + 1] - hy[i + 1, j, k])
            zpsi[i, j, t] = value
            ex[i, j, k] -= zcb[i, j, t] * value


@numba.njit
def _e_node(i: int, ey: np.ndarray, ez: np.ndarray, hx: np.ndarray, hy: np.ndarray,
            hz: np.ndarray, lo: np.ndarray, hi: np.ndarray, terms: Any) -> None:
    """ey's and ez's CPML terms on node plane i."""
    ny, nz = hx.shape[1] - 2, hx.shape[2] - 2
    (pk, pb, pc, ppsi, pcb), (xmap, xb, xc, xpsi, xcb) = terms[8], terms[9]
    (x2map, x2b, x2c, x2psi, x2cb), (ymap, mb, mc, ypsi, ycb) = terms[10], terms[11]
    k0, k1 = lo[2], hi[2] + 1
    for j in range(ny if pk.size else 0):
        for t in range(pk.size):
            k = pk[t]
            value = pb[t] * ppsi[i, j, t] + pc[t] * (hx[i, j + 1, k + 1] - hx[i, j + 1, k])
            ppsi[i, j, t] = value
            ey[i, j, k] += pcb[i, j, t] * value
    s = xmap[i]
    for j in range(ny if s >= 0 else 0):
        _absorb_e(ey[i, j, k0:k1], hz[i + 1, j + 1, k0:k1], hz[i, j + 1, k0:k1],
                  xpsi[s, j, k0:k1], xb[s], xc[s], xcb[s, j, k0:k1], -1.0)
    s = x2map[i]
    for j in range(lo[1], hi[1] + 1 if s >= 0 else lo[1]):
        _absorb_e(ez[i, j], hy[i + 1, j, 1:nz + 1], hy[i, j, 1:nz + 1], x2psi[s, j],
                  x2b[s], x2c[s], x2cb[s, j], 1.0)
    for j in range(lo[1], hi[1] + 1 if ypsi.shape[1] else lo[1]):
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
         hz: np.ndarray, idx: np.ndarray, fy: Any, fz: Any, ch: float,
         idxd: np.ndarray, fyd: Any, fzd: Any, lo: np.ndarray, hi: np.ndarray,
         xs: np.ndarray, xq: np.ndarray, xc: np.ndarray, xa: np.ndarray, xb: np.ndarray,
         ys: np.ndarray, yq: np.ndarray, yc: np.ndarray, ya: np.ndarray, yb: np.ndarray,
         zs: np.ndarray, zq: np.ndarray, zc: np.ndarray, za: np.ndarray, zb: np.ndarray,
         terms: Any, starts: np.ndarray, levels: int, blocks: int, mode: int,
         sources: np.ndarray, scales: np.ndarray, waves: np.ndarray, taps: np.ndarray,
         tapped: np.ndarray) -> None:
    """`blocks` * `levels` time steps (BOTH), or one step's H (H_ONLY: H(n+1/2) = H(n-1/2)
    - dt/mu curl E(n)) or E (E_ONLY: E(n+1) = ca E(n) + cb curl H(n+1/2) over the edges from
    `lo` to `hi`, each component's coefficients constant along a run: materials.EdgeRuns).
    The fields are the padded stores (nx + 2, ny + 2, nz + 2); `fy`, `fz` the inverse
    spacings along y and z at H's faces, `fyd`, `fzd` at E's edges (each a scalar, or a
    plane of the store's shape: `_at`). `terms`: the CPML's twelve (pml.terms). Monitors read
    E through `taps` before each step, sources add to it after (see _tap, _drive).

    BOTH is temporally blocked: the x planes are cut into tiles at `starts`; a tile takes
    `levels` steps at once as a wavefront, at position p the plane p - l to step l (each
    plane's H then E), so a plane is read from memory once for all its steps. A tile leans
    back one plane per step, so that it needs only planes its left neighbour has done, and its
    right neighbour's of the block of steps before: tiles on one anti-diagonal (tile + 2 *
    block) run in parallel. Each plane sees the same operations on the same values as in
    step-by-step updates: the fields are bit for bit the same. Tiles must be wider than
    `levels` + 1 planes."""
    nx, ny, nz = ex.shape[0] - 2, ex.shape[1] - 2, ex.shape[2] - 2
    size = ex.shape[1] * ex.shape[2]
    exf, eyf, ezf = ex.reshape(nx + 2, size), ey.reshape(nx + 2, size), ez.reshape(nx + 2, size)
    hxf, hyf, hzf = hx.reshape(nx + 2, size), hy.reshape(nx + 2, size), hz.reshape(nx + 2, size)
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
                        if i < nx:
                            _h_planes(hxf[i], hyf[i + 1], hzf[i + 1], exf[i], eyf[i],
                                      eyf[i + 1], ezf[i], ezf[i + 1], ch, fy, fz, idx[i], ny, nz)
                        else:
                            _hx_plane(hxf[i], eyf[i], ezf[i], ch, fy, fz, ny, nz)
                        _h_node(i, ey, ez, hx, ch, inside)
                        if i < nx:
                            _h_cell(i, ex, ey, ez, hy, hz, ch, inside)
                    if mode != H_ONLY:
                        if i < nx:
                            _ex_plane(exf[i], hyf[i + 1], hzf[i + 1], fyd, fzd,
                                      (xs[i], xs[i + 1]), xq, xc, xa, xb, lo, hi, nz)
                            _e_cell(i, ex, hy, hz, lo, hi, inside)
                        if lo[0] <= i <= hi[0]:
                            _ey_plane(eyf[i], hxf[i], hzf[i], hzf[i + 1], fzd, idxd[i],
                                      (ys[i], ys[i + 1]), yq, yc, ya, yb, lo, hi, ny, nz)
                            _ez_plane(ezf[i], hxf[i], hyf[i], hyf[i + 1], fyd, idxd[i],
                                      (zs[i], zs[i + 1]), zq, zc, za, zb, lo, hi, nz)
                            _e_node(i, ey, ez, hx, hy, hz, lo, hi, inside)
                        _drive(i, s, ex, ey, ez, sources, scales, waves)
