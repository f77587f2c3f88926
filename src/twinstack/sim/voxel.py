"""Cartesian (Yee) voxelization of closed triangle meshes for FDTD/FIT solvers.

Method (scanline). Rays run along x through `samples` x `samples` cell-centred (y, z) points of
every cell column. Each triangle visits only the rays inside its (y, z) bounding box; a ray hits
it when the point lies inside its (y, z) projection, decided by three edge functions. Each edge
function is computed from the edge's endpoints in one canonical order, so the two triangles
sharing an edge see the same number; a ray exactly on an edge or vertex is resolved by a
symbolic perturbation of the ray, (y + e, z + e^2), so it counts in exactly one triangle of a
closed surface. A hit enters (x-normal < 0) or leaves (> 0); a point is inside while the
winding count is positive, so for outward-oriented solids the union of several bodies is
simply "count > 0" over all their triangles. Intervals are exact along x, so a cell's fill is
the mean over its sub-rays of covered length / dx: boundary cells get fractional fill and the
volume is second-order accurate in the sub-ray spacing.

Overlap rule (the cell's material, a staircase). Bodies are ranked by (priority, position in
the list); a cell gets the material of the highest-ranked body that covers at least half of
it, so between equal priorities the later body wins; cells no body covers to half stay 0.
Per-body coverage (not the union) decides, so a cell half filled by each of two bodies goes to
the higher-ranked one, and a cell a third filled by each of three stays background although
its union fill is 1: the material array is the solver's staircase, `fill` its conformal
correction.

PEC edges. Rays along each axis through the grid nodes' lines (an x-edge lies on the line
y = y_j, z = z_k) give each edge's length inside the union of the PEC bodies; an edge is PEC
when more than half of it is inside. Edges lying exactly on a PEC surface count as inside (a
conductor's surface is metal): the ray is perturbed towards all four (y, z) quadrants and the
largest inside length is kept.

Speed. Triangles are bucketed by the y-columns their bounding box meets; per column the hits
are grouped by ray (counting sort), sorted along the ray and swept once; whole cells inside an
interval are +1/-1 marks summed along x, so a ray costs its hits, not its length. The numba
kernel is serial: a prange over column groups measured no faster on the 2-core development
machine and cannot be cached as simply (compile ~20 s instead of ~8 s).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

MAX_CELLS = 200_000_000


class GridError(ValueError):
    """Bad grid or voxelization input; the message says what is wrong and which limit was hit."""


# --- grid lines ------------------------------------------------------------------------------


def axis_lines(
    lo: float,
    hi: float,
    cell: float,
    *,
    refinements: Sequence[tuple[float, float, float]] = (),
    snap: Sequence[float] = (),
    max_ratio: float = 1.5,
    max_lines: int = 100_000,
) -> np.ndarray:
    """Graded grid lines on one axis, from `lo` to `hi` exactly.

    Cells are at most `cell`, at most `finer_cell` where they overlap a refinement (a, b,
    finer_cell), neighbours differ by at most `max_ratio`, and every `snap` in (lo, hi) is a
    line (solid boundaries on grid lines: no partial cells there).

    A size field g (the smallest wanted size, growing away from each refinement by a factor
    sqrt(max_ratio) per cell) is integrated between consecutive fixed lines (lo, snaps, hi),
    and each gap gets ceil(integral) cells at equal steps of the integral: cells c g with
    c = integral / ceil(integral) <= 1. Half the ratio budget is the field's own grading, the
    other half absorbs the rounding c where two gaps meet: every gap holds at least
    1 / (sqrt(max_ratio) - 1) cells' worth of the field (4.45 for 1.5), so c >=
    1 / sqrt(max_ratio). The price: a gap between close snaps gets about five cells, unless
    it holds a whole number of `cell`s where the field is flat (a box on a uniform grid).
    """
    values = [lo, hi, cell, max_ratio, *snap, *(v for r in refinements for v in r)]
    if not all(math.isfinite(float(v)) for v in values):
        raise GridError("grid input must be finite numbers")
    if cell <= 0:
        raise GridError(f"the cell size must be positive, not {cell}")
    if hi <= lo:
        raise GridError(f"the axis is empty: hi {hi} <= lo {lo}")
    if max_ratio <= 1:
        raise GridError(f"max_ratio must be > 1, not {max_ratio}")
    slope = 0.45 * math.log(max_ratio)  # field growth per cell, a little under sqrt(ratio)
    per_gap = 1 / (math.sqrt(max_ratio) - 1)  # fewest cells' worth of field in a gap
    sources: list[tuple[float, float, float]] = []
    for a, b, h in refinements:
        if h <= 0 or b < a:
            raise GridError(f"a refinement needs a <= b and a positive cell, not {(a, b, h)}")
        if b < lo or a > hi or h >= cell:
            continue
        # flat a little beyond [a, b]: a cell overlapping the interval then lies where g = h
        margin = h * (math.exp(slope) - 1) / slope
        sources.append((a - margin, b + margin, h))
    fixed = _fixed_lines(lo, hi, snap)
    short = [(a, b) for a, b in itertools.pairwise(fixed) if b - a < per_gap * cell]
    # a short gap of whole cells where the field is flat keeps them: no rounding to absorb
    whole = {(a, b) for a, b in short if _whole_cells(b - a, cell)}
    while True:
        graded = sources + [(a, b, (b - a) / per_gap) for a, b in short if (a, b) not in whole]
        coarse = {(a, b) for a, b in whole
                  if all(h + slope * max(0.0, s0 - b, a - s1) >= cell for s0, s1, h in graded)}
        if coarse == whole:
            break
        whole = coarse
    sources = graded

    def size(x: np.ndarray) -> np.ndarray:
        s = np.full_like(x, cell)
        for a, b, h in sources:
            s = np.minimum(s, h + slope * np.maximum(np.maximum(a - x, x - b), 0.0))
        return s

    pieces: list[np.ndarray] = []
    total = 1
    for a, b in itertools.pairwise(fixed):
        smallest = min([cell, *(h for s0, s1, h in sources if s1 >= a and s0 <= b)])
        expected = (b - a) / smallest
        if total + expected > 2 * max_lines:  # the field is coarser: this bounds the samples
            raise GridError(
                f"the axis would need about {total + expected:.0f} lines or more, more than "
                f"max_lines {max_lines}"
            )
        xs = np.linspace(a, b, int(32 * math.ceil(expected)) + 2)
        density = 1.0 / size(xs)
        phi = np.concatenate(([0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(xs))))
        n = max(1, math.ceil(phi[-1] * (1 - 1e-9)))
        total += n
        if total > max_lines:
            raise GridError(
                f"the axis would need at least {total} lines, more than max_lines {max_lines}"
            )
        lines = np.interp(np.arange(n + 1) * (phi[-1] / n), phi, xs)
        lines[0], lines[-1] = a, b
        pieces.append(lines[:-1])
    return np.concatenate([*pieces, [hi]])


def _fixed_lines(lo: float, hi: float, snap: Sequence[float]) -> np.ndarray:
    """lo, the snaps inside (lo, hi) and hi, sorted; snaps closer than 1e-9 of the axis to
    another line merge (bounding boxes of touching solids differ in the last digits)."""
    lines = np.unique(np.array([lo, hi, *(p for p in snap if lo < p < hi)], dtype=np.float64))
    keep = np.concatenate(([True], np.diff(lines) > 1e-9 * (hi - lo)))
    lines = lines[keep]
    lines[-1] = hi
    return lines


def _whole_cells(length: float, cell: float) -> bool:
    cells = length / cell
    return round(cells) >= 1 and abs(cells - round(cells)) <= 1e-9 * cells


@dataclass(frozen=True)
class Grid:
    """Grid lines (cell edges) on each axis, each strictly increasing."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray

    def __post_init__(self) -> None:
        for name in "xyz":
            a = np.asarray(getattr(self, name), dtype=np.float64)
            if a.ndim != 1 or len(a) < 2:
                raise GridError(f"the grid's {name} axis needs at least two lines")
            if not np.all(np.isfinite(a)):
                raise GridError(f"the grid's {name} axis has lines that are not finite")
            if not np.all(np.diff(a) > 0):
                raise GridError(f"the grid's {name} lines are not strictly increasing")
            object.__setattr__(self, name, a)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.x) - 1, len(self.y) - 1, len(self.z) - 1)

    @property
    def cells(self) -> int:
        nx, ny, nz = self.shape
        return nx * ny * nz

    def cell_volumes(self) -> np.ndarray:
        """(nx, ny, nz) by broadcasting: (nx, 1, 1) * (1, ny, 1) * (1, 1, nz)."""
        return (np.diff(self.x)[:, None, None] * np.diff(self.y)[None, :, None]
                * np.diff(self.z)[None, None, :])

    @classmethod
    def uniform(
        cls, lo: Sequence[float], hi: Sequence[float], cells: Sequence[int] | int
    ) -> Grid:
        n = [cells] * 3 if isinstance(cells, int) else list(cells)
        if len(lo) != 3 or len(hi) != 3 or len(n) != 3 or min(n) < 1:
            raise GridError("a uniform grid needs 3 lows, 3 highs and >= 1 cell per axis")
        x, y, z = (np.linspace(lo[i], hi[i], n[i] + 1) for i in range(3))
        return cls(x, y, z)


@dataclass(frozen=True)
class Body:
    """One closed, outward-oriented solid to voxelize; `material` >= 1 (0 is background)."""

    vertices: np.ndarray
    faces: np.ndarray
    material: int
    priority: int = 0
    pec: bool = False

    def triangles(self) -> np.ndarray:
        """(m, 3, 3) float64 corner coordinates, after checking the arrays."""
        v = np.asarray(self.vertices, dtype=np.float64)
        f = np.asarray(self.faces)
        if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
            raise GridError("a body needs vertices (n, 3) and at least one triangle (m, 3)")
        if not np.all(np.isfinite(v)):
            raise GridError("a body has vertices that are not finite")
        if f.min() < 0 or f.max() >= len(v):
            raise GridError("a body has triangle indices outside its vertex list")
        if not 1 <= self.material <= np.iinfo(np.uint16).max:
            raise GridError(f"a body's material must be in 1..65535, not {self.material}")
        return v[f]


@dataclass
class Voxels:
    grid: Grid
    material: np.ndarray  # (nx, ny, nz) uint16, 0 background
    fill: np.ndarray  # (nx, ny, nz) float32, inside fraction of the union of all bodies
    pec_edges: tuple[np.ndarray, np.ndarray, np.ndarray]  # x-, y-, z-edges, bool

    def volume(self) -> float:
        g = self.grid
        return _volume(self.fill, np.diff(g.x), np.diff(g.y), np.diff(g.z))

    def material_volumes(self) -> dict[int, float]:
        """Volume of the cells of each material index >= 1 (the staircase)."""
        vol = np.broadcast_to(self.grid.cell_volumes(), self.grid.shape)
        sums = np.bincount(self.material.ravel(), weights=vol.ravel())
        return {int(m): float(sums[m]) for m in np.flatnonzero(sums) if m > 0}


@njit(cache=True)
def _volume(fill: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> float:
    """sum(fill * cell volume) in float64 without a float64 copy of `fill`."""
    total = 0.0
    for i in range(fill.shape[0]):
        for j in range(fill.shape[1]):
            row = 0.0
            for k in range(fill.shape[2]):
                row += fill[i, j, k] * dz[k]
            total += row * dx[i] * dy[j]
    return total


@njit(cache=True)
def _bounds(tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The corners' lowest and highest coordinates (numpy's axis-0 min is strided, slow)."""
    lo, hi = tri[0, 0].copy(), tri[0, 0].copy()
    for t in range(tri.shape[0]):
        for c in range(3):
            for a in range(3):
                lo[a] = min(lo[a], tri[t, c, a])
                hi[a] = max(hi[a], tri[t, c, a])
    return lo, hi


# --- the scanline kernel ---------------------------------------------------------------------


@njit(cache=True, inline="always")
def _side(edge: np.ndarray, py: float, pz: float, sy: int, sz: int) -> tuple[float, int]:
    """Edge function of p against an edge (ay, az, dy, dz, orientation) stored from its
    lexicographically first end, so both triangles sharing it compute the same number, and
    the sign for the triangle, with p perturbed by (sy e, sz e^2) when p lies on the line."""
    ay, az, dy, dz, o = edge[0], edge[1], edge[2], edge[3], edge[4]
    e = dy * (pz - az) - dz * (py - ay)
    if e > 0:
        sign = 1
    elif e < 0:
        sign = -1
    elif dz != 0:  # perturbed e = dy sz e^2 - dz sy e
        sign = -1 if dz * sy > 0 else 1
    elif dy != 0:
        sign = 1 if dy * sz > 0 else -1
    else:
        sign = 0
    return e * o, sign * int(o)


@njit(cache=True)
def _scan(tri: np.ndarray, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, s: int,
          sy: int, sz: int, out: np.ndarray, material: np.ndarray, value: int,
          i0: int, j0: int, k0: int) -> None:
    """Inside fraction of each x-interval of `xs`, averaged over groups of s x s rays.

    Rays run along x (coordinate 0 of `tri`) at every (ys[a], zs[b]); ys and zs are sorted
    and grouped by s into columns (j, k). The fraction f of cell (i, j, k) raises
    out[i0 + i, j0 + j, k0 + k] to f if larger, and where f >= 1/2 and value > 0 it sets
    material[...] = value. Triangles are bucketed by y-column, so each column's output is
    written contiguously along z.
    """
    nx, ncol_y, ncol_z = len(xs) - 1, len(ys) // s, len(zs) // s
    m = tri.shape[0]
    a0 = np.empty(m, np.int64)
    a1 = np.empty(m, np.int64)
    b0 = np.empty(m, np.int64)
    b1 = np.empty(m, np.int64)
    per_group = np.zeros(ncol_y + 1, np.int64)
    for t in range(m):
        y_lo = min(tri[t, 0, 1], tri[t, 1, 1], tri[t, 2, 1])
        y_hi = max(tri[t, 0, 1], tri[t, 1, 1], tri[t, 2, 1])
        z_lo = min(tri[t, 0, 2], tri[t, 1, 2], tri[t, 2, 2])
        z_hi = max(tri[t, 0, 2], tri[t, 1, 2], tri[t, 2, 2])
        a0[t] = np.searchsorted(ys, y_lo, "left")
        a1[t] = np.searchsorted(ys, y_hi, "right")
        b0[t] = np.searchsorted(zs, z_lo, "left")
        b1[t] = np.searchsorted(zs, z_hi, "right")
        if a0[t] < a1[t] and b0[t] < b1[t]:
            for g in range(a0[t] // s, (a1[t] - 1) // s + 1):
                per_group[g + 1] += 1
    start = np.cumsum(per_group)
    bucket = np.empty(start[-1], np.int64)
    cursor = start[:-1].copy()
    for t in range(m):
        if a0[t] < a1[t] and b0[t] < b1[t]:
            for g in range(a0[t] // s, (a1[t] - 1) // s + 1):
                bucket[cursor[g]] = t
                cursor[g] += 1

    n_rays = s * len(zs)  # rays of one group: s sub-columns in y times every z
    first = np.empty(n_rays + 1, np.int64)
    acc = np.zeros((nx, ncol_z), np.float64)  # reset while written out, in cache
    full = np.zeros((nx, ncol_z), np.int64)
    run = np.empty(ncol_z, np.int64)
    px = np.empty(64, np.float64)
    pd = np.empty(64, np.int8)
    edge = np.empty((3, 5), np.float64)  # per edge: ay, az, dy, dz, orientation
    capacity = 0
    ray = np.empty(0, np.int64)
    hit_x = np.empty(0, np.float64)
    hit_d = np.empty(0, np.int8)
    for g in range(ncol_y):
        candidates = 0
        for q in range(start[g], start[g + 1]):
            t = bucket[q]
            cols = min(a1[t], (g + 1) * s) - max(a0[t], g * s)
            candidates += cols * (b1[t] - b0[t])
        if candidates > capacity:
            capacity = 2 * candidates
            ray = np.empty(capacity, np.int64)
            hit_x = np.empty(capacity, np.float64)
            hit_d = np.empty(capacity, np.int8)
        n_hits = 0
        for q in range(start[g], start[g + 1]):
            t = bucket[q]
            for e in range(3):  # edge e runs from corner e + 1 to e + 2, opposite corner e
                u, v = tri[t, (e + 1) % 3], tri[t, (e + 2) % 3]
                if u[1] < v[1] or (u[1] == v[1] and u[2] < v[2]):
                    edge[e, 0], edge[e, 1], edge[e, 4] = u[1], u[2], 1.0
                    edge[e, 2], edge[e, 3] = v[1] - u[1], v[2] - u[2]
                else:
                    edge[e, 0], edge[e, 1], edge[e, 4] = v[1], v[2], -1.0
                    edge[e, 2], edge[e, 3] = u[1] - v[1], u[2] - v[2]
            x0, x1, x2 = tri[t, 0, 0], tri[t, 1, 0], tri[t, 2, 0]
            x_lo, x_hi = min(x0, x1, x2), max(x0, x1, x2)
            for a in range(max(a0[t], g * s), min(a1[t], (g + 1) * s)):
                py = ys[a]
                for b in range(b0[t], b1[t]):
                    pz = zs[b]
                    w0, s0 = _side(edge[0], py, pz, sy, sz)
                    if s0 == 0:
                        continue
                    w1, s1 = _side(edge[1], py, pz, sy, sz)
                    if s1 != s0:
                        continue
                    w2, s2 = _side(edge[2], py, pz, sy, sz)
                    if s2 != s0:
                        continue
                    wsum = w0 + w1 + w2
                    x = (w0 * x0 + w1 * x1 + w2 * x2) / wsum if wsum != 0 else x0
                    ray[n_hits] = (a - g * s) * len(zs) + b
                    hit_x[n_hits] = min(max(x, x_lo), x_hi)
                    hit_d[n_hits] = -s0  # counter-clockwise in (y, z): x-normal > 0, leaving
                    n_hits += 1
        # group the hits by ray (counting sort), then sweep each ray in x order
        first[:] = 0
        for h in range(n_hits):
            first[ray[h] + 1] += 1
        for r in range(n_rays):
            first[r + 1] += first[r]
        order = np.empty(n_hits, np.int64)
        for h in range(n_hits):
            r = ray[h]
            order[first[r]] = h
            first[r] += 1  # first[r] now ends ray r: ray r spans first[r - 1] .. first[r]
        begin = 0
        x_min, x_max, c_min, c_max = np.inf, -np.inf, ncol_z, -1  # the cells touched
        for r in range(n_rays):
            k = first[r] - begin
            if k == 0:
                continue
            if k > len(px):
                px = np.empty(2 * k, np.float64)
                pd = np.empty(2 * k, np.int8)
            for i in range(k):  # insertion sort: a ray crosses a few faces
                h = order[begin + i]
                xv, dv = hit_x[h], hit_d[h]
                j = i
                while j > 0 and px[j - 1] > xv:
                    px[j] = px[j - 1]
                    pd[j] = pd[j - 1]
                    j -= 1
                px[j] = xv
                pd[j] = dv
            begin = first[r]
            col = (r % len(zs)) // s
            count = 0
            enter = 0.0
            for i in range(k):
                before = count
                count += pd[i]
                if before <= 0 < count:
                    enter = px[i]
                elif count <= 0 < before:
                    _add(acc, full, xs, col, enter, px[i])
                    x_min, x_max = min(x_min, enter), max(x_max, px[i])
                    c_min, c_max = min(c_min, col), max(c_max, col)
        if c_max < 0:
            continue
        scale = 1.0 / (s * s)
        run[:] = 0
        i_lo = max(int(np.searchsorted(xs, x_min, "right")) - 1, 0)
        i_hi = min(int(np.searchsorted(xs, x_max, "left")), nx)
        for i in range(i_lo, i_hi):
            for c in range(c_min, c_max + 1):
                run[c] += full[i, c]
                f = (acc[i, c] + run[c]) * scale
                acc[i, c] = 0.0
                full[i, c] = 0
                if f > out[i0 + i, j0 + g, k0 + c]:
                    out[i0 + i, j0 + g, k0 + c] = f
                if value > 0 and f >= 0.5:
                    material[i0 + i, j0 + g, k0 + c] = value


@njit(cache=True, inline="always")
def _add(acc: np.ndarray, full: np.ndarray, xs: np.ndarray, col: int, lo: float,
         hi: float) -> None:
    """Add the interval [lo, hi] to column `col`: the fractions of its two end cells to
    `acc`, the whole cells between as +1/-1 marks in `full` (summed along x later)."""
    lo, hi = max(lo, xs[0]), min(hi, xs[-1])
    if hi <= lo:
        return
    i = np.searchsorted(xs, lo, "right") - 1  # lo in [xs[i], xs[i + 1])
    j = np.searchsorted(xs, hi, "left") - 1  # hi in (xs[j], xs[j + 1]]
    if i == j:
        acc[i, col] += (hi - lo) / (xs[i + 1] - xs[i])
        return
    acc[i, col] += (xs[i + 1] - lo) / (xs[i + 1] - xs[i])
    acc[j, col] += (hi - xs[j]) / (xs[j + 1] - xs[j])
    if j > i + 1:
        full[i + 1, col] += 1
        full[j, col] -= 1


# --- voxelize --------------------------------------------------------------------------------


def estimate_bytes(grid: Grid, bodies: Sequence[Body] | int) -> int:
    """Bytes a voxelization needs at its peak: outputs (material 2, fill 4, PEC edges 3 per
    cell), a PEC pass's float32 fractions (4 per edge), one column group's accumulators and
    the triangles with their hit lists (about 64 ray candidates each, 17 bytes a candidate;
    1,000 triangles a body when only the number of bodies is given)."""
    n_bodies = bodies if isinstance(bodies, int) else len(bodies)
    triangles = (n_bodies * 1000 if isinstance(bodies, int)
                 else sum(len(b.faces) for b in bodies))
    nx, ny, nz = grid.shape
    cells = grid.cells
    outputs = cells * (2 + 4) + 3 * (nx + 1) * (ny + 1) * (nz + 1)
    working = 4 * (nx + 1) * (ny + 1) * (nz + 1) + nx * nz * 16 + triangles * (
        72 + 32 + 64 * 17)
    return int(outputs + working)


def _box(coords: np.ndarray, lo: float, hi: float) -> tuple[int, int]:
    """The cells [i0, i1) of lines `coords` that overlap [lo, hi] (clipped to the grid)."""
    i0 = max(int(np.searchsorted(coords, lo, "right")) - 1, 0)
    i1 = min(int(np.searchsorted(coords, hi, "left")), len(coords) - 1)
    return i0, max(i1, i0)


def _samples(lines: np.ndarray, s: int) -> np.ndarray:
    """s cell-centred sample coordinates per cell, in increasing order."""
    frac = (np.arange(s) + 0.5) / s
    return (lines[:-1, None] + np.diff(lines)[:, None] * frac[None, :]).ravel()


def _coverage(grid: Grid, tri: np.ndarray, box: list[tuple[int, int]], s: int,
              fill: np.ndarray, material: np.ndarray, value: int) -> None:
    """Raise `fill` to the inside fraction of `tri`'s solid in the cells of `box` (cell
    ranges per axis); set `material` to `value` (if > 0) where that is at least half."""
    (i0, i1), (j0, j1), (k0, k1) = box
    ys = _samples(grid.y[j0:j1 + 1], s)
    zs = _samples(grid.z[k0:k1 + 1], s)
    _scan(tri, grid.x[i0:i1 + 1], ys, zs, s, 1, 1, fill, material, value, i0, j0, k0)


def voxelize(grid: Grid, bodies: Sequence[Body], *, samples: int = 2,
             max_cells: int = MAX_CELLS) -> Voxels:
    """Material (staircase), fill fraction and PEC edges of `bodies` on `grid`."""
    if not bodies:
        raise GridError("nothing to voxelize: the body list is empty")
    if samples < 1:
        raise GridError(f"samples must be >= 1, not {samples}")
    if grid.cells > max_cells:
        need = estimate_bytes(grid, bodies)
        raise GridError(
            f"the grid has {grid.cells:,} cells, more than the limit {max_cells:,} (max_cells); "
            f"voxelizing it would need about {need / 2**30:.1f} GiB"
        )
    tris = [b.triangles() for b in bodies]
    shape = grid.shape
    material = np.zeros(shape, np.uint16)
    fill = np.zeros(shape, np.float32)
    boxes: list[list[tuple[int, int]] | None] = []
    for t in tris:
        lo, hi = _bounds(t)
        box = [_box(line, lo[a], hi[a]) for a, line in enumerate((grid.x, grid.y, grid.z))]
        boxes.append(None if any(b0 == b1 for b0, b1 in box) else box)
    rank = sorted(range(len(bodies)), key=lambda i: (bodies[i].priority, i))
    for i in rank:  # lowest rank first: the higher-ranked body overwrites
        body_box = boxes[i]
        if body_box is None:
            continue
        _coverage(grid, tris[i], body_box, samples, fill, material, bodies[i].material)
    present = [b for b in boxes if b is not None]
    if _overlapping(present):  # overlapping bodies: the union needs one pass over all
        union_box = [(min(b[a][0] for b in present), max(b[a][1] for b in present))
                     for a in range(3)]
        fill[tuple(slice(a, b) for a, b in union_box)] = 0.0
        _coverage(grid, np.concatenate(tris), union_box, samples, fill, material, 0)
    pec = [t for t, b in zip(tris, bodies, strict=True) if b.pec]
    edges = _pec_edges(grid, np.concatenate(pec)) if pec else _no_edges(shape)
    return Voxels(grid, material, fill, edges)


def _overlapping(boxes: list[list[tuple[int, int]]]) -> bool:
    for n, a in enumerate(boxes):
        for b in boxes[:n]:
            if all(a[k][0] < b[k][1] and b[k][0] < a[k][1] for k in range(3)):
                return True
    return False


def _no_edges(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nx, ny, nz = shape
    return (np.zeros((nx, ny + 1, nz + 1), bool), np.zeros((nx + 1, ny, nz + 1), bool),
            np.zeros((nx + 1, ny + 1, nz), bool))


def _pec_edges(grid: Grid, tri: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges more than half inside the union of the PEC triangles' solids.

    The y- and z-edges use the same x-ray kernel on cyclically permuted coordinates (a
    rotation: orientation, hence the inside, is kept)."""
    out = _no_edges(grid.shape)
    lines = (grid.x, grid.y, grid.z)
    lo, hi = _bounds(tri)
    for axis, back in ((0, (0, 1, 2)), (1, (2, 0, 1)), (2, (1, 2, 0))):
        perm = [(axis + k) % 3 for k in range(3)]  # ray axis first
        along, u, w = (lines[p] for p in perm)
        i0, i1 = _box(along, lo[perm[0]], hi[perm[0]])
        j0, j1 = (int(np.searchsorted(u, lo[perm[1]], "left")),
                  int(np.searchsorted(u, hi[perm[1]], "right")))
        k0, k1 = (int(np.searchsorted(w, lo[perm[2]], "left")),
                  int(np.searchsorted(w, hi[perm[2]], "right")))
        if i0 == i1 or j0 == j1 or k0 == k1:
            continue
        t = np.ascontiguousarray(tri[:, :, perm])
        frac = np.zeros((i1 - i0, j1 - j0, k1 - k0), np.float32)
        unused = np.zeros((1, 1, 1), np.uint16)
        for sy, sz in ((1, 1), (1, -1), (-1, 1), (-1, -1)):  # on the surface counts as in
            _scan(t, along[i0:i1 + 1], u[j0:j1], w[k0:k1], 1, sy, sz, frac, unused, 0, 0, 0, 0)
        box = [(i0, i1), (j0, j1), (k0, k1)]
        view = tuple(slice(*box[back[d]]) for d in range(3))
        out[axis][view] = frac.transpose(back) > 0.5
    return out
