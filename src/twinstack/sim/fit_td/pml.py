"""The convolutional PML (CPML, Roden and Gedney 2000, with the complex-frequency-shifted
stretch s = kappa + sigma / (alpha + j omega eps0)): the outermost `cells` cells behind a face
absorb what reaches them, and a PEC wall closes them.

kappa costs nothing: it divides the inverse spacings the main kernels already take. sigma and
alpha need one auxiliary field psi per curl term, and only in the slabs where sigma > 0; the
kernels update each term on the rows they have just written (`terms` lays them out).
Profiles grade as depth^ORDER, sigma's maximum the usual optimum 0.8 (ORDER + 1) / (eta0 dx)
for the cell at the face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from twinstack.sim.fit_td.grid import EPS0, MU0, YeeGrid
from twinstack.sim.fit_td.materials import EdgeRuns

ORDER = 3
KAPPA_MAX = 5.0  # stretches evanescent fields; 1 would absorb only propagating ones
ALPHA_MAX = 0.05 * 2 * math.pi * EPS0 * 1e9  # the CFS shift: absorbs late-time low frequencies
ETA0 = math.sqrt(MU0 / EPS0)


@dataclass(frozen=True)
class Profile:
    """Along one axis, at cell centres (where H's curl terms sit) or nodes (E's): the stretch
    kappa and the recursion's b and c (c includes the inverse spacing, not kappa)."""

    kappa: np.ndarray
    b: np.ndarray
    c: np.ndarray

    @property
    def absorbing(self) -> np.ndarray:
        return np.nonzero(self.c)[0]


def profiles(grid: YeeGrid, axis: int, cells: tuple[int, int], dt: float
             ) -> tuple[Profile, Profile]:
    """The (centres, nodes) profiles of `axis` with `cells` PML cells at its low and high
    ends (0: none)."""
    line = (grid.x, grid.y, grid.z)[axis]
    centres = (line[1:] + line[:-1]) / 2
    depth_c, depth_n = np.zeros(centres.size), np.zeros(line.size)
    sigma_max = np.zeros(2)
    for side, count in enumerate(cells):
        if count <= 0:
            continue
        if count >= line.size - 1:
            raise ValueError(f"a PML of {count} cells does not fit in {line.size - 1} cells "
                             f"along {'xyz'[axis]}")
        inner, outer = (line[count], line[0]) if side == 0 else (line[-1 - count], line[-1])
        thickness = abs(outer - inner)
        for depth, where in ((depth_c, centres), (depth_n, line)):
            beyond = (inner - where) if side == 0 else (where - inner)
            chosen = beyond > 0
            depth[chosen] = beyond[chosen] / thickness
        face_cell = float(line[1] - line[0]) if side == 0 else float(line[-1] - line[-2])
        sigma_max[side] = 0.8 * (ORDER + 1) / (ETA0 * face_cell)
    mid = (line[0] + line[-1]) / 2
    low, high = sigma_max
    return (_profile(depth_c, np.where(centres < mid, low, high), grid.spacing[axis], dt),
            _profile(depth_n, np.where(line < mid, low, high), grid.dual[axis], dt))


def _profile(depth: np.ndarray, sigma_max: np.ndarray, spacing: np.ndarray,
             dt: float) -> Profile:
    graded = depth**ORDER
    sigma = sigma_max * graded
    kappa = 1.0 + (KAPPA_MAX - 1.0) * graded
    alpha = np.where(depth > 0, ALPHA_MAX * (1.0 - depth), 0.0)
    b = np.exp(-(sigma / kappa + alpha) * dt / EPS0)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(sigma > 0, sigma * (b - 1.0) / (kappa * (sigma + kappa * alpha)), 0.0)
    return Profile(kappa, b, c / spacing)


Term = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def terms(grid: YeeGrid, cells: list[tuple[int, int]], dt: float, lo: np.ndarray,
          hi: np.ndarray, runs: dict[str, EdgeRuns], dtype: np.dtype,
          inverse: tuple[np.ndarray, ...], inverse_dual: tuple[np.ndarray, ...]
          ) -> tuple[Term, ...]:
    """The twelve curl terms as the kernels take them (kernels.py): H's (hx across y and z,
    hy across z and x, hz across x and y), then E's (ex across y and z, ey across z and x, ez
    across x and y). Each is (where, b, c, psi, cb): `where` maps the slab's index along
    the term's axis (-1 outside) for x and y, and lists it for z; cb is each E edge's (for H,
    unused). kappa divides `inverse` and `inverse_dual` in place."""
    nx, ny, nz = grid.shape
    found: list[tuple[Profile, Profile] | None] = [
        profiles(grid, a, cells[a], dt) if any(cells[a]) else None for a in range(3)]
    for a, pair in enumerate(found):
        if pair is not None:
            inverse[a][:] /= pair[0].kappa.astype(dtype)
            inverse_dual[a][:] /= pair[1].kappa.astype(dtype)
    unused = np.zeros((1, 1, 1), dtype)

    def slab(axis: int, at_nodes: bool) -> np.ndarray:
        pair = found[axis]
        if pair is None:
            return np.zeros(0, np.int64)
        n = grid.shape[axis]
        first, last = (int(lo[axis]), int(hi[axis])) if at_nodes else (0, n - 1)
        chosen = pair[1 if at_nodes else 0].absorbing
        return chosen[(chosen >= first) & (chosen <= last)].astype(np.int64)

    def term(axis: int, at_nodes: bool, shape: tuple[int, int, int],
             component: str | None) -> Term:
        index = slab(axis, at_nodes)
        pair = found[axis]
        b = c = np.zeros(0)
        if pair is not None:
            profile = pair[1 if at_nodes else 0]
            b, c = profile.b[index], profile.c[index]
        size = list(shape)
        size[axis] = index.size
        psi = np.zeros(size, dtype)
        edges = unused
        if component is not None:
            chosen: list[slice | np.ndarray] = [slice(0, n) for n in shape]
            chosen[axis] = index
            found_runs = runs[component]
            edges = np.ascontiguousarray(found_runs.cb[found_runs.classes[tuple(chosen)]],
                                         dtype=dtype)
        if axis == 2:
            where = index
        else:
            where = np.full(shape[axis], -1, np.int64)
            where[index] = np.arange(index.size)
        return where, b.astype(dtype), c.astype(dtype), psi, edges

    h = (term(1, False, (nx + 1, ny, nz), None), term(2, False, (nx + 1, ny, nz), None),
         term(2, False, (nx, ny + 1, nz), None), term(0, False, (nx, ny + 1, nz), None),
         term(0, False, (nx, ny, nz + 1), None), term(1, False, (nx, ny, nz + 1), None))
    e = (term(1, True, (nx, ny + 1, nz + 1), "ex"), term(2, True, (nx, ny + 1, nz + 1), "ex"),
         term(2, True, (nx + 1, ny, nz + 1), "ey"), term(0, True, (nx + 1, ny, nz + 1), "ey"),
         term(0, True, (nx + 1, ny + 1, nz), "ez"), term(1, True, (nx + 1, ny + 1, nz), "ez"))
    return h + e
