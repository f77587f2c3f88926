"""Materials on the grid: a small table, a material index per cell, and what the E update
needs — each edge's class (its averaged permittivity and conductivity) as runs of one class
along the kernels' flat planes (kernels.py: rows of nz + 2 along z), so the inner loop sees two
scalar coefficients and a plane of one material is one run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twinstack.sim.fit_td.grid import COMPONENTS, EPS0


@dataclass(frozen=True)
class Material:
    """Relative permittivity and conductivity (S/m); non-magnetic."""

    eps_r: float = 1.0
    sigma: float = 0.0

    def __post_init__(self) -> None:
        if not self.eps_r >= 1.0:
            raise ValueError(f"a material's eps_r must be at least 1, got {self.eps_r}")
        if not self.sigma >= 0.0:
            raise ValueError(f"a material's sigma must be at least 0, got {self.sigma}")


@dataclass(frozen=True)
class EdgeRuns:
    """One E component's edges as runs along each flat plane of the kernels' store
    ((ny + 2) * (nz + 2) values a plane): the runs of plane i are `start[i]` ..
    `start[i + 1]`, run r begins at flat position `q0[r]` and has class `klass[r]`; `ca[c]`,
    `cb[c]` are the class's update coefficients. The store's padding takes the class before
    it, so that it does not cut a run (the kernels set it back to 0)."""

    start: np.ndarray
    q0: np.ndarray
    klass: np.ndarray
    ca: np.ndarray
    cb: np.ndarray
    eps: np.ndarray  # each class's permittivity (F/m), for the energy and the sources
    classes: np.ndarray  # each edge's class: for the energy and the sources, not the loop


def cell_properties(cells: np.ndarray, table: list[Material], fill: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's relative permittivity and conductivity. With `fill` (the inside fraction of
    each cell), a cell of material m is that fraction m and the rest the background (material
    0): boundary cells get the volume average instead of a staircase."""
    eps_r = np.array([m.eps_r for m in table])[cells]
    sigma = np.array([m.sigma for m in table])[cells]
    if fill is not None:
        part = np.where(cells > 0, np.clip(fill, 0.0, 1.0), 1.0)
        eps_r = part * eps_r + (1 - part) * table[0].eps_r
        sigma = part * sigma + (1 - part) * table[0].sigma
    return eps_r, sigma


def edge_runs(eps_r: np.ndarray, sigma: np.ndarray, component: str, dt: float,
              dtype: np.dtype, extra_sigma: np.ndarray | None = None,
              pec: np.ndarray | None = None) -> EdgeRuns:
    """The runs of `component` edges, each edge taking the mean permittivity and conductivity
    of the (up to four) cells around it, plus `extra_sigma` (lumped resistors); `pec` edges
    are held at 0. The store's rows are those of a grid of `eps_r`'s shape."""
    axis = COMPONENTS.index(component)
    eps_edge, sigma_edge = (_around_edges(v, axis) for v in (eps_r, sigma))
    if extra_sigma is not None:
        sigma_edge += extra_sigma
    eps_edge = np.round(eps_edge, 9)  # averages of the same cells: one class
    if pec is not None:
        eps_edge[pec] = -1.0  # a class of its own, coefficients 0
    pairs = np.stack([eps_edge.ravel(), sigma_edge.ravel()], axis=1)
    unique, classes = np.unique(pairs, axis=0, return_inverse=True)
    classes = classes.reshape(eps_edge.shape).astype(np.int32)
    conductor = unique[:, 0] < 0
    eps = EPS0 * np.where(conductor, 1.0, unique[:, 0])
    loss = unique[:, 1] * dt / (2 * eps)
    ca = np.where(conductor, 0.0, (1 - loss) / (1 + loss))
    cb = np.where(conductor, 0.0, dt / eps / (1 + loss))
    planes, rows, columns = (int(n) for n in eps_edge.shape)
    ny, nz = eps_r.shape[1], eps_r.shape[2]
    flat = np.full((planes, ny + 2, nz + 2), -1, np.int32)  # int32: 4 bytes a cell at setup
    flat[:, :rows, :columns] = classes
    flat = flat.reshape(planes, -1)
    # the padding takes the class before it
    at = np.where(flat >= 0, np.arange(flat.shape[1], dtype=np.int32), np.int32(0))
    flat = np.take_along_axis(flat, np.maximum.accumulate(at, axis=1), axis=1)
    change = np.ones(flat.shape, bool)
    change[:, 1:] = flat[:, 1:] != flat[:, :-1]
    plane, q0 = np.nonzero(change)
    start = np.searchsorted(plane, np.arange(planes + 1)).astype(np.int64)
    return EdgeRuns(start, q0.astype(np.int64), flat[plane, q0].astype(np.int32),
                    ca.astype(dtype), cb.astype(dtype), eps, classes)


def _around_edges(values: np.ndarray, axis: int) -> np.ndarray:
    """The mean over the cells that share each edge along `axis` (edges on the box's faces
    have two cells, or one on its edges: the outside repeats the inside)."""
    pad = [(0, 0) if a == axis else (1, 1) for a in range(3)]
    padded = np.pad(values.astype(np.float64), pad, mode="edge")
    others = [a for a in range(3) if a != axis]
    total = np.zeros([n + (0 if a == axis else 1) for a, n in enumerate(values.shape)])
    for da in (0, 1):
        for db in (0, 1):
            index = [slice(None)] * 3
            index[others[0]] = slice(da, da + total.shape[others[0]])
            index[others[1]] = slice(db, db + total.shape[others[1]])
            total += padded[tuple(index)]
    return total / 4
