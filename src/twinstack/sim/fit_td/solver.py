"""A FIT-TD simulation: fields on a Yee grid in a box whose faces are PEC or PMC walls, the
leapfrog in time, current sources on edges, point probes and the discrete energy (conserved
exactly by the scheme in a lossless closed box: the test of the implementation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numba
import numpy as np

from twinstack.sim.fit_td import kernels
from twinstack.sim.fit_td.grid import COMPONENTS, MU0, YeeGrid
from twinstack.sim.fit_td.materials import EdgeRuns, Material, edge_runs

PARALLEL_CELLS = 32_768  # fewer cells: one thread (measured: 2 threads were slower at 20^3)
FACES = ("x-", "x+", "y-", "y+", "z-", "z+")
WALLS = ("pec", "pmc")
# H without its ghost layers (kernels.py): the field of every cell face
INNER = {"hx": np.s_[:, 1:-1, 1:-1], "hy": np.s_[1:-1, :, 1:-1], "hz": np.s_[1:-1, 1:-1, :]}
Waveform = Callable[[np.ndarray | float], np.ndarray | float]


@dataclass(frozen=True)
class EdgeSource:
    """A current of `amplitude` * waveform(t) amperes along the `component` edge nearest
    `point` (a soft source: the fields pass through it)."""

    component: str
    point: tuple[float, float, float]
    waveform: Waveform
    amplitude: float = 1.0


@dataclass(frozen=True)
class Probe:
    """The `component` of E (V/m) on the edge nearest `point`, recorded at every step."""

    name: str
    component: str
    point: tuple[float, float, float]


@dataclass
class _Placed:
    array: np.ndarray  # the E component it is on
    index: tuple[int, int, int]
    scale: float = 1.0
    waveform: Waveform | None = None
    samples: list[float] = field(default_factory=list)


class Simulation:
    """Fields in the grid's box: `cells` (one uint8 per cell, default all 0) index the
    `materials` table (default vacuum); mu_r is one value for the whole box. Each outer face
    is a PEC wall (the default) or a PMC wall (`walls={"y-": "pmc", ...}`). `dtype` float32
    (the default) or float64."""

    def __init__(self, grid: YeeGrid, *, sources: Sequence[EdgeSource],
                 probes: Sequence[Probe] = (), materials: Sequence[Material] = (Material(),),
                 cells: np.ndarray | None = None, mu_r: float = 1.0, courant: float = 0.99,
                 dtype: type = np.float32, walls: dict[str, str] | None = None) -> None:
        if not sources:
            raise ValueError("a simulation needs at least one source")
        self.walls = {face: "pec" for face in FACES}
        for face, wall in (walls or {}).items():
            if face not in FACES or wall not in WALLS:
                raise ValueError(f"walls take faces {', '.join(FACES)} and kinds "
                                 f"{', '.join(WALLS)}, not {face!r}: {wall!r}")
            self.walls[face] = wall
        self.grid = grid
        self.dtype = np.dtype(dtype)
        nx, ny, nz = grid.shape
        cells = np.zeros(grid.shape, np.uint8) if cells is None else np.asarray(cells)
        if cells.shape != grid.shape:
            raise ValueError(f"cells has shape {cells.shape}, the grid {grid.shape}")
        used = np.unique(cells)
        if used.size and (used[0] < 0 or used[-1] >= len(materials)):
            raise ValueError(f"cells name material {int(used[-1])}, the table has "
                             f"{len(materials)}")
        self.mu = MU0 * mu_r
        fastest = min(materials[int(m)].eps_r for m in used)
        self.dt = grid.stable_dt(courant, fastest, mu_r)
        zeros = lambda *s: np.zeros(s, self.dtype)  # noqa: E731
        self.e = {"ex": zeros(nx, ny + 1, nz + 1), "ey": zeros(nx + 1, ny, nz + 1),
                  "ez": zeros(nx + 1, ny + 1, nz)}
        self.h = {"hx": zeros(nx + 1, ny + 2, nz + 2), "hy": zeros(nx + 2, ny + 1, nz + 2),
                  "hz": zeros(nx + 2, ny + 2, nz + 1)}
        # the E indices updated along each axis: the walls' planes too where they are PMC
        self.lo = np.array([0 if self.walls[f"{a}-"] == "pmc" else 1 for a in "xyz"])
        self.hi = np.array([n if self.walls[f"{a}+"] == "pmc" else n - 1
                            for a, n in zip("xyz", grid.shape, strict=True)])
        self.runs = {c: edge_runs(cells, list(materials), c, self.dt, self.dtype)
                     for c in COMPONENTS}
        self.inverse = _inverse(grid.spacing, self.dtype)
        self.inverse_dual = _inverse(grid.dual, self.dtype)
        self.steps = 0
        self.sources = [self._place_source(s) for s in sources]
        self.probes = {p.name: self._place(p.component, p.point) for p in probes}

    def _place(self, component: str, point: tuple[float, float, float]) -> _Placed:
        if component not in COMPONENTS:
            raise ValueError(f"component must be one of {', '.join(COMPONENTS)}, not "
                             f"{component!r}")
        index = self.grid.edge_index(component, point)
        axis = COMPONENTS.index(component)
        if any(not self.lo[a] <= index[a] <= self.hi[a] for a in range(3) if a != axis):
            raise ValueError(f"the {component} edge at {tuple(point)} lies on a PEC wall, "
                             "where the field is held at 0: move it inside")
        return _Placed(self.e[component], index)

    def _place_source(self, source: EdgeSource) -> _Placed:
        placed = self._place(source.component, source.point)
        axis = COMPONENTS.index(source.component)
        area = np.prod([self.grid.dual[a][placed.index[a]] for a in range(3) if a != axis])
        runs = self.runs[source.component]
        cb = float(runs.cb[runs.classes[placed.index]])
        placed.scale = -cb * source.amplitude / float(area)
        placed.waveform = source.waveform
        return placed

    def run(self, steps: int, progress: Callable[[int], None] | None = None) -> None:
        """Advance `steps` time steps (H, then E with the sources at the half step). A small
        grid runs on one thread: waking the others would cost more than its sweep."""
        before = numba.get_num_threads()
        numba.set_num_threads(1 if self.grid.cells < PARALLEL_CELLS else before)
        try:
            self._advance(steps, progress)
        finally:
            numba.set_num_threads(before)

    def _advance(self, steps: int, progress: Callable[[int], None] | None) -> None:
        ch = self.dtype.type(self.dt / self.mu)
        e, h = self.e, self.h
        (ix, iy, iz), (dx, dy, dz) = self.inverse, self.inverse_dual
        x, y, z = (_run_arrays(self.runs[c]) for c in COMPONENTS)
        for _ in range(steps):
            for probe in self.probes.values():
                probe.samples.append(float(probe.array[probe.index]))
            kernels.update_h(e["ex"], e["ey"], e["ez"], h["hx"], h["hy"], h["hz"], ix, iy, iz,
                             ch)
            kernels.update_e(e["ex"], e["ey"], e["ez"], h["hx"], h["hy"], h["hz"], dx, dy, dz,
                             self.lo, self.hi, *x, *y, *z)
            t = (self.steps + 0.5) * self.dt
            values: dict[int, float] = {}  # a sheet of edges shares one waveform: once a step
            for source in self.sources:
                assert source.waveform is not None
                key = id(source.waveform)
                if key not in values:
                    values[key] = float(source.waveform(t))
                source.array[source.index] += source.scale * values[key]
            self.steps += 1
            if progress is not None:
                progress(self.steps)

    def signal(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A probe's samples and their times (E at whole steps)."""
        samples = np.asarray(self.probes[name].samples)
        return np.arange(samples.size) * self.dt, samples

    def energy(self) -> float:
        """The scheme's conserved energy (J) at the current whole step: 1/2 eps E(n)^2 plus
        1/2 mu H(n-1/2).H(n+1/2) over the cells' edge and face volumes."""
        g, e = self.grid, self.e
        (dx, dy, dz), (ddx, ddy, ddz) = g.spacing, g.dual
        after = {k: v.copy() for k, v in self.h.items()}
        ix, iy, iz = self.inverse
        kernels.update_h(e["ex"], e["ey"], e["ez"], after["hx"], after["hy"], after["hz"],
                         ix, iy, iz, self.dtype.type(self.dt / self.mu))
        volume = {"ex": (dx, ddy, ddz), "ey": (ddx, dy, ddz), "ez": (ddx, ddy, dz),
                  "hx": (ddx, dy, dz), "hy": (dx, ddy, dz), "hz": (dx, dy, ddz)}
        electric = sum(np.einsum("ijk,i,j,k->", self.runs[c].eps[self.runs[c].classes]
                                 * e[c].astype(np.float64) ** 2, *volume[c]) for c in e)
        magnetic = sum(np.einsum("ijk,i,j,k->", self.h[c][INNER[c]].astype(np.float64)
                                 * after[c][INNER[c]].astype(np.float64), *volume[c])
                       for c in after)
        return 0.5 * (electric + self.mu * magnetic)


def _run_arrays(runs: EdgeRuns) -> tuple[np.ndarray, ...]:
    return runs.start, runs.k0, runs.klass, runs.ca, runs.cb


def _inverse(lengths: tuple[np.ndarray, np.ndarray, np.ndarray], dtype: np.dtype
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, z = ((1.0 / d).astype(dtype) for d in lengths)
    return x, y, z
