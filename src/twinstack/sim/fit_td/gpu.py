"""The leapfrog on a GPU (numba.cuda), used when one is present (`available`).

The same updates as kernels.py, written per edge and face rather than per row: one thread
for the three H faces (or the three E edges) at (i, j, k), k along a block's fastest axis so
that a warp reads consecutive floats. On a GPU a material is a class per edge and a gather of
its coefficients (cheap there, unlike on a CPU), and each CPML term finds its psi through a
map of its slab's index along its axis (-1 outside). The fields, psi and tables live on the
device while it runs; `Device.run` copies the fields and psi back when it is done, so what
reads them on the host (state, energy, pictures) needs nothing new. Without a GPU, numba's
CUDA simulator (NUMBA_ENABLE_CUDASIM=1) runs these kernels: that is how the tests check them.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import cuda

if TYPE_CHECKING:
    from twinstack.sim.fit_td.solver import Simulation

BLOCK = (32, 4, 2)  # threads along k, j, i


@functools.cache
def available() -> bool:
    """Whether numba finds a CUDA GPU (or its simulator is on)."""
    return bool(cuda.is_available())


def free_bytes() -> float:
    """The GPU's free memory."""
    return float(cuda.current_context().get_memory_info().free)


def bytes_needed(sim: Simulation) -> int:
    """What a simulation takes on the GPU: its fields, the CPML's psi and cb, and a class
    per edge (int32) for each E component."""
    nx, ny, nz = sim.grid.shape
    arrays = [*sim.e.values(), *sim.h.values(), *(t[3] for t in sim.terms),
              *(t[4] for t in sim.terms[6:])]
    return sum(a.nbytes for a in arrays) + 3 * 4 * (nx + 1) * (ny + 1) * (nz + 1)


Z_TERMS = (1, 2, 7, 8)  # pml.terms lists these terms' slab (along z), the others map it


def _where(n: int, term: tuple[np.ndarray, ...], size: int) -> np.ndarray:
    """Term n's slab index for each position along its axis (-1 outside)."""
    if n not in Z_TERMS:
        return term[0].astype(np.int64)
    mapped = np.full(size, -1, np.int64)
    mapped[term[0]] = np.arange(term[0].size)
    return mapped


@cuda.jit(device=True)
def absorb(psi: Any, at: tuple[int, int, int], s: int, b: Any, c: Any, difference: Any,
           zero: Any) -> Any:
    """psi = b psi + c difference at `at` for slab index s (none, -1: `zero`, of the
    fields' type: a literal 0 would make the sums float64)."""
    if s < 0:
        return zero
    value = b[s] * psi[at] + c[s] * difference
    psi[at] = value
    return value


@cuda.jit
def update_h(hx: Any, hy: Any, hz: Any, ex: Any, ey: Any, ez: Any, idx: Any, idy: Any,
             idz: Any, ch: Any, zero: Any, maps: Any, bs: Any, cs: Any, p0: Any, p1: Any,
             p2: Any, p3: Any, p4: Any, p5: Any) -> None:
    """hx on node plane i, hy and hz on cell plane i, with their CPML terms (the order
    of pml.terms: hx across y, z; hy across z, x; hz across x, y)."""
    k, j, i = cuda.grid(3)  # type: ignore[call-arg,var-annotated]
    nx, ny, nz = ex.shape[0], ey.shape[1], ez.shape[2]
    if i <= nx and j < ny and k < nz:
        dy, dz = ez[i, j + 1, k] - ez[i, j, k], ey[i, j, k + 1] - ey[i, j, k]
        value = hx[i, j + 1, k + 1] - ch * (dy * idy[j] - dz * idz[k])
        s, t = maps[0, j], maps[1, k]
        value -= ch * absorb(p0, (i, s, k), s, bs[0], cs[0], dy, zero)
        value += ch * absorb(p1, (i, j, t), t, bs[1], cs[1], dz, zero)
        hx[i, j + 1, k + 1] = value
    if i < nx and j <= ny and k < nz:
        dz, dx = ex[i, j, k + 1] - ex[i, j, k], ez[i + 1, j, k] - ez[i, j, k]
        value = hy[i + 1, j, k + 1] - ch * (dz * idz[k] - dx * idx[i])
        s, t = maps[2, k], maps[3, i]
        value -= ch * absorb(p2, (i, j, s), s, bs[2], cs[2], dz, zero)
        value += ch * absorb(p3, (t, j, k), t, bs[3], cs[3], dx, zero)
        hy[i + 1, j, k + 1] = value
    if i < nx and j < ny and k <= nz:
        dx, dy = ey[i + 1, j, k] - ey[i, j, k], ex[i, j + 1, k] - ex[i, j, k]
        value = hz[i + 1, j + 1, k] - ch * (dx * idx[i] - dy * idy[j])
        s, t = maps[4, i], maps[5, j]
        value -= ch * absorb(p4, (s, j, k), s, bs[4], cs[4], dx, zero)
        value += ch * absorb(p5, (i, t, k), t, bs[5], cs[5], dy, zero)
        hz[i + 1, j + 1, k] = value


@cuda.jit
def update_e(ex: Any, ey: Any, ez: Any, hx: Any, hy: Any, hz: Any, idxd: Any, idyd: Any,
             idzd: Any, zero: Any, lo: Any, hi: Any, classes: Any, ca: Any, cb: Any,
             maps: Any, bs: Any, cs: Any, p6: Any, p7: Any, p8: Any, p9: Any, p10: Any,
             p11: Any, e6: Any, e7: Any, e8: Any, e9: Any, e10: Any, e11: Any) -> None:
    """ex on cell plane i, ey and ez on node plane i, between the walls `lo`..`hi`, with
    their CPML terms (ex across y, z; ey across z, x; ez across x, y; e6..e11 each
    edge's cb in the slab), each edge's class in `classes` (component, i, j, k) giving
    ca and cb (component, class)."""
    k, j, i = cuda.grid(3)  # type: ignore[call-arg,var-annotated]
    nx, ny, nz = ex.shape[0], ey.shape[1], ez.shape[2]
    inside_y, inside_z = lo[1] <= j <= hi[1], lo[2] <= k <= hi[2]
    if i < nx and inside_y and inside_z:
        n = classes[0, i, j, k]
        dy, dz = hz[i + 1, j + 1, k] - hz[i + 1, j, k], hy[i + 1, j, k + 1] - hy[i + 1, j, k]
        value = ca[0, n] * ex[i, j, k] + cb[0, n] * (dy * idyd[j] - dz * idzd[k])
        s, t = maps[6, j], maps[7, k]
        value += e6[i, max(s, 0), k] * absorb(p6, (i, s, k), s, bs[6], cs[6], dy, zero)
        value -= e7[i, j, max(t, 0)] * absorb(p7, (i, j, t), t, bs[7], cs[7], dz, zero)
        ex[i, j, k] = value
    if lo[0] <= i <= hi[0] and j < ny and inside_z:
        n = classes[1, i, j, k]
        dz, dx = hx[i, j + 1, k + 1] - hx[i, j + 1, k], hz[i + 1, j + 1, k] - hz[i, j + 1, k]
        value = ca[1, n] * ey[i, j, k] + cb[1, n] * (dz * idzd[k] - dx * idxd[i])
        s, t = maps[8, k], maps[9, i]
        value += e8[i, j, max(s, 0)] * absorb(p8, (i, j, s), s, bs[8], cs[8], dz, zero)
        value -= e9[max(t, 0), j, k] * absorb(p9, (t, j, k), t, bs[9], cs[9], dx, zero)
        ey[i, j, k] = value
    if lo[0] <= i <= hi[0] and inside_y and k < nz:
        n = classes[2, i, j, k]
        dx, dy = hy[i + 1, j, k + 1] - hy[i, j, k + 1], hx[i, j + 1, k + 1] - hx[i, j, k + 1]
        value = ca[2, n] * ez[i, j, k] + cb[2, n] * (dx * idxd[i] - dy * idyd[j])
        s, t = maps[10, i], maps[11, j]
        value += e10[max(s, 0), j, k] * absorb(p10, (s, j, k), s, bs[10], cs[10], dx, zero)
        value -= e11[i, max(t, 0), k] * absorb(p11, (i, t, k), t, bs[11], cs[11], dy, zero)
        ez[i, j, k] = value


@cuda.jit
def drive(ex: Any, ey: Any, ez: Any, sources: Any, scales: Any, waves: Any,
          s: int) -> None:
    """kernels._drive: each source's current at step s, a thread per source edge."""
    q = cuda.grid(1)  # type: ignore[call-arg,var-annotated]
    if q < sources.shape[0]:
        c, i, j, k = sources[q, 0], sources[q, 1], sources[q, 2], sources[q, 3]
        value = scales[q] * waves[sources[q, 4], s]
        if c == 0:
            ex[i, j, k] += value
        elif c == 1:
            ey[i, j, k] += value
        else:
            ez[i, j, k] += value


@cuda.jit
def tap(ex: Any, ey: Any, ez: Any, taps: Any, owner: Any, tapped: Any, s: int) -> None:
    """kernels._tap: the monitors' boxes of E into row s, a thread per value."""
    column = cuda.grid(1)  # type: ignore[call-arg,var-annotated]
    if column < owner.size:
        t = owner[column]
        x0, y0, y1 = taps[t, 1], taps[t, 3], taps[t, 4]
        z0, z1 = taps[t, 5], taps[t, 6]
        offset = column - taps[t, 7]
        nz, ny = z1 - z0, y1 - y0
        i, j, k = x0 + offset // (ny * nz), y0 + offset // nz % ny, z0 + offset % nz
        tapped[s, column] = ex[i, j, k] if taps[t, 0] == 0 else \
            ey[i, j, k] if taps[t, 0] == 1 else ez[i, j, k]


class Device:
    """A simulation's arrays on the GPU and the step loop there."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        nx, ny, nz = sim.grid.shape
        self.grid = _blocks((nz + 1, ny + 1, nx + 1))  # H's extents, which cover E's
        sizes = [ny, nz, nz, nx, nx, ny, ny + 1, nz + 1, nz + 1, nx + 1, nx + 1, ny + 1]
        longest = max(sizes) + 1
        maps = np.full((12, longest), -1, np.int64)
        width = max(1, max(term[1].size for term in sim.terms))
        bs, cs = (np.zeros((12, width), sim.dtype) for _ in range(2))
        for n, (term, size) in enumerate(zip(sim.terms, sizes, strict=True)):
            maps[n, :size] = _where(n, term, size)
            bs[n, :term[1].size], cs[n, :term[2].size] = term[1], term[2]
        runs = [sim.runs[c] for c in ("ex", "ey", "ez")]
        count = max(r.ca.size for r in runs)
        ca, cb = (np.zeros((3, count), sim.dtype) for _ in range(2))
        classes = np.zeros((3, nx + 1, ny + 1, nz + 1), np.int32)
        for a, r in enumerate(runs):
            ca[a, :r.ca.size], cb[a, :r.cb.size] = r.ca, r.cb
            shape = r.classes.shape
            classes[a, :shape[0], :shape[1], :shape[2]] = r.classes
        put = cuda.to_device
        self.tables = (put(maps), put(bs), put(cs), put(classes), put(ca), put(cb),
                       put(np.asarray(sim.lo)), put(np.asarray(sim.hi)))
        self.spacings = tuple(put(np.ascontiguousarray(a)) for a in
                              (*sim.inverse, *sim.inverse_dual))
        # the host's fields are views into padded stores (solver.py): copied contiguous
        self.fields = {name: put(np.ascontiguousarray(a))
                       for name, a in (*sim.e.items(), *sim.h.items())}
        self.psi = [put(_nonempty(term[3])) for term in sim.terms]
        self.edges = [put(_nonempty(term[4])) for term in sim.terms[6:]]
        # sources and taps are fixed once the simulation is set up: on the device once
        rows, scales = sim.sources.arrays()
        taps = sim.taps.array()
        self.owner = np.repeat(np.arange(len(taps)), np.diff([*taps[:, 7], sim.taps.columns]))
        self.sources = (put(rows), put(scales), len(rows))
        self.taps = (put(taps), put(self.owner))
        self.stale = False  # the host's arrays changed (restore): copy them over first

    def run(self, count: int, waves: np.ndarray, tapped: np.ndarray) -> None:
        """`count` steps; each step's taps into `tapped` and sources from `waves`."""
        sim = self.sim
        if self.stale:
            for name, array in (*sim.e.items(), *sim.h.items()):
                self.fields[name].copy_to_device(np.ascontiguousarray(array))
            for psi, term in zip(self.psi, sim.terms, strict=True):
                if term[3].size:
                    psi.copy_to_device(term[3])
            self.stale = False
        f = self.fields
        maps, bs, cs, classes, ca, cb, lo, hi = self.tables
        idx, idy, idz, idxd, idyd, idzd = self.spacings
        ch, zero = sim.dtype.type(sim.dt / sim.mu), sim.dtype.type(0)
        rows_d, scales_d, sources = self.sources
        taps_d, owner_d = self.taps
        waves_d = cuda.to_device(np.ascontiguousarray(waves))
        tapped_d = cuda.device_array(tapped.shape, tapped.dtype)
        e, h = (f["ex"], f["ey"], f["ez"]), (f["hx"], f["hy"], f["hz"])
        for s in range(count):
            if self.owner.size:
                tap[_blocks((self.owner.size,)), 128](*e, taps_d, owner_d, tapped_d, s)
            update_h[self.grid, BLOCK](*h, *e, idx, idy, idz, ch, zero, maps, bs, cs,
                                       *self.psi[:6])
            update_e[self.grid, BLOCK](*e, *h, idxd, idyd, idzd, zero, lo, hi, classes, ca, cb,
                                       maps, bs, cs, *self.psi[6:], *self.edges)
            if sources:
                drive[_blocks((sources,)), 128](*e, rows_d, scales_d, waves_d, s)
        tapped_d.copy_to_host(tapped)
        for name, array in (*sim.e.items(), *sim.h.items()):
            array[...] = f[name].copy_to_host()
        for psi, term in zip(self.psi, sim.terms, strict=True):
            if term[3].size:
                psi.copy_to_host(term[3])


def _blocks(extent: tuple[int, ...]) -> tuple[int, ...]:
    """Blocks to cover `extent` threads (k, j, i) with BLOCK, or 128 a block in 1-D."""
    if len(extent) == 1:
        return (max(1, math.ceil(extent[0] / 128)),)
    return tuple(max(1, math.ceil(n / b)) for n, b in zip(extent, BLOCK, strict=True))


def _nonempty(array: np.ndarray) -> np.ndarray:
    """A device array cannot be empty: an unused term gets one element nothing reads."""
    return array if array.size else np.zeros((1, 1, 1), array.dtype)
