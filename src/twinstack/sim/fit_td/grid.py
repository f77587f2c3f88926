"""The Yee grid: node lines along x, y and z (primary grid), their spacings, the dual spacings
(between cell centres) and the largest stable time step."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

C0 = 299_792_458.0
MU0 = 4e-7 * math.pi  # the pre-2019 value; the difference (1e-10) is far below any test here
EPS0 = 1.0 / (MU0 * C0 * C0)
COMPONENTS = ("ex", "ey", "ez")  # E on the edges along x, y, z


@dataclass(frozen=True)
class YeeGrid:
    """Primary nodes at x[i], y[j], z[k]. E lives on primary edges (Ex at cell-edge centres
    along x), H on the faces' centres, so the grid has `shape` = (nx, ny, nz) cells."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    spacing: tuple[np.ndarray, np.ndarray, np.ndarray] = field(init=False, repr=False)
    dual: tuple[np.ndarray, np.ndarray, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        lines = []
        for name, raw in (("x", self.x), ("y", self.y), ("z", self.z)):
            line = np.asarray(raw, dtype=np.float64)
            if line.ndim != 1 or line.size < 3:
                raise ValueError(f"{name} needs at least 3 node lines (2 cells)")
            if not np.all(np.diff(line) > 0):
                raise ValueError(f"{name} node lines must increase strictly")
            lines.append(line)
        object.__setattr__(self, "x", lines[0])
        object.__setattr__(self, "y", lines[1])
        object.__setattr__(self, "z", lines[2])
        object.__setattr__(self, "spacing", tuple(np.diff(line) for line in lines))
        object.__setattr__(self, "dual", tuple(_dual(np.diff(line)) for line in lines))

    @classmethod
    def uniform(cls, size: tuple[float, float, float], cell: float) -> YeeGrid:
        """A box from the origin, `size` rounded to whole cells of about `cell`."""
        axes = [np.linspace(0.0, s, max(2, round(s / cell)) + 1) for s in size]
        return cls(*axes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.x.size - 1, self.y.size - 1, self.z.size - 1)

    @property
    def cells(self) -> int:
        nx, ny, nz = self.shape
        return nx * ny * nz

    def stable_dt(self, courant: float = 0.99, eps_r: float = 1.0, mu_r: float = 1.0) -> float:
        """`courant` times the largest stable step (3-D CFL on the smallest spacings)."""
        if not 0 < courant <= 1:
            raise ValueError(f"the Courant factor must be in (0, 1], got {courant}")
        speed = C0 / math.sqrt(eps_r * mu_r)
        inverse = math.sqrt(sum(1.0 / float(d.min()) ** 2 for d in self.spacing))
        return courant / (speed * inverse)

    def edge_index(self, component: str, point: tuple[float, float, float]
                   ) -> tuple[int, int, int]:
        """The `component` edge (ex, ey, ez) nearest to `point`, or ValueError outside."""
        axis = "xyz".index(component[-1])
        index = []
        for a, (line, value) in enumerate(zip((self.x, self.y, self.z), point, strict=True)):
            if not line[0] <= value <= line[-1]:
                raise ValueError(f"the point {tuple(point)} is outside the grid "
                                 f"({line[0]:g} .. {line[-1]:g} along {'xyz'[a]})")
            if a == axis:  # edge centres
                index.append(int(np.clip(np.searchsorted(line, value) - 1, 0, line.size - 2)))
            else:
                index.append(int(np.abs(line - value).argmin()))
        return (index[0], index[1], index[2])


def _dual(spacing: np.ndarray) -> np.ndarray:
    """Distances between neighbouring cell centres around each node (half cells at the ends)."""
    dual = np.empty(spacing.size + 1)
    dual[0], dual[-1] = spacing[0] / 2, spacing[-1] / 2
    dual[1:-1] = (spacing[:-1] + spacing[1:]) / 2
    return dual
