"""The convolutional PML (CPML, Roden and Gedney 2000, with the complex-frequency-shifted
stretch s = kappa + sigma / (alpha + j omega eps0)): the outermost `cells` cells behind a face
absorb what reaches them, and a PEC wall closes them.

kappa costs nothing: it divides the inverse spacings the main kernels already take. sigma and
alpha need one auxiliary field psi per curl term, and only in the slabs where sigma > 0; each
term is a separate pass over its slab after the main update (kernels.pml_term), so the main
loops stay as they are. Profiles grade as depth^ORDER, sigma's maximum the usual optimum
0.8 (ORDER + 1) / (eta0 dx) for the cell at the face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from twinstack.sim.fit_td.grid import EPS0, MU0, YeeGrid

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


def slabs(indices: np.ndarray, first: int, last: int) -> list[tuple[int, int]]:
    """The runs of consecutive `indices` within first..last, as (start, stop) ranges."""
    chosen = indices[(indices >= first) & (indices <= last)]
    if chosen.size == 0:
        return []
    breaks = np.nonzero(np.diff(chosen) > 1)[0]
    starts = np.concatenate([[chosen[0]], chosen[breaks + 1]])
    stops = np.concatenate([chosen[breaks], [chosen[-1]]]) + 1
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]
