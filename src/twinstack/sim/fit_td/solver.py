"""A FIT-TD simulation: fields on a Yee grid in a box whose faces are PEC or PMC walls or
absorbing CPML slabs, the leapfrog in time, current sources and lumped ports on edges, and the
monitors: point probes, on-the-fly DFT and snapshots of field planes, port voltages and
currents, and the discrete energy (conserved exactly by the scheme in a lossless closed box:
the test of the implementation). `state()` / `restore()` make a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from twinstack.sim.fit_td import gpu, kernels, pml
from twinstack.sim.fit_td.grid import COMPONENTS, EPS0, MU0, YeeGrid
from twinstack.sim.fit_td.materials import EdgeRuns, Material, cell_properties, edge_runs
from twinstack.sim.fit_td.monitors import PlaneMonitor
from twinstack.sim.fit_td.planewave import PlaneWave, TotalFieldBox
from twinstack.sim.fit_td.ports import LumpedPort, PortEdges, place
from twinstack.sim.fit_td.sources import Waveform

PARALLEL_CELLS = 32_768  # fewer cells: one thread (measured: 2 threads were slower at 20^3)
LEVELS = 4  # time steps per temporal block (kernels.leap)
TAPPED_BYTES = 32 * 2**20  # the monitors' values kept between two calls of the kernel at most
FACES = ("x-", "x+", "y-", "y+", "z-", "z+")
WALLS = ("pec", "pmc", "pml")
# H without its ghost layers (kernels.py): the field of every cell face
INNER = {"hx": np.s_[:, 1:-1, 1:-1], "hy": np.s_[1:-1, :, 1:-1], "hz": np.s_[1:-1, 1:-1, :]}


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
class _Port:
    port: LumpedPort
    edges: PortEdges
    tap: tuple[slice, tuple[int, ...]]  # its edges' E in the taps
    voltages: list[float] = field(default_factory=list)
    driven: list[float] = field(default_factory=list)  # V_s at each half step


class _Sources:
    """The currents on edges as the kernel takes them (kernels._drive): a row per edge
    (component, i, j, k, waveform), its scale, and each waveform's values over a run."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, int, int, int]] = []
        self.scales: list[float] = []
        self.waveforms: list[Waveform] = []

    def add(self, component: str, index: tuple[int, int, int], scale: float,
            waveform: Waveform) -> None:
        if all(w is not waveform for w in self.waveforms):  # a sheet of edges shares one
            self.waveforms.append(waveform)
        self.rows.append((COMPONENTS.index(component), *index, self.row(waveform)))
        self.scales.append(scale)

    def row(self, waveform: Waveform) -> int:
        return [id(w) for w in self.waveforms].index(id(waveform))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array(self.rows, np.int64).reshape(-1, 5), np.array(self.scales, np.float64)

    def values(self, first: int, count: int, dt: float) -> np.ndarray:
        """Each waveform at the half steps first + 1/2 .. first + count - 1/2."""
        return np.array([[float(w((n + 0.5) * dt)) for n in range(first, first + count)]
                         for w in self.waveforms], np.float64).reshape(-1, count)


class _Taps:
    """The boxes of E the monitors read, as the kernel copies them (kernels._tap): a row per
    box (component, x0, x1, y0, y1, z0, z1, first column), each step's values side by side."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, ...]] = []
        self.columns = 0

    def add(self, component: str, index: tuple[int | slice, ...], shape: tuple[int, ...]
            ) -> tuple[slice, tuple[int, ...]]:
        """A box for e[component][index]: its columns and the shape its values take."""
        ranges = [(i, i + 1) if isinstance(i, int) else i.indices(n)[:2]
                  for i, n in zip(index, shape, strict=True)]
        size = int(np.prod([b - a for a, b in ranges]))
        self.rows.append((COMPONENTS.index(component), *(v for r in ranges for v in r),
                          self.columns))
        columns = slice(self.columns, self.columns + size)
        self.columns += size
        return columns, tuple(b - a for a, b in ranges)

    def array(self) -> np.ndarray:
        return np.array(self.rows, np.int64).reshape(-1, 8)


class Simulation:
    """Fields in the grid's box: `cells` (one small integer per cell, default all 0) index the
    `materials` table (default vacuum), `fill` (optional) the inside fraction of each cell,
    `pec_edges` (optional, one bool array per E component) edges held at 0; mu_r is one value
    for the whole box. Each outer face is a PEC wall (the default), a PMC wall or `pml`: its
    outermost `pml_cells` cells absorb (`walls={"y-": "pmc", "z+": "pml"}`). `dtype`
    float32 (the default) or float64. `backend` "cpu", "gpu" (gpu.py) or "auto": the GPU
    where there is one."""

    def __init__(self, grid: YeeGrid, *, sources: Sequence[EdgeSource] = (),
                 ports: Sequence[LumpedPort] = (), plane_waves: Sequence[PlaneWave] = (),
                 probes: Sequence[Probe] = (),
                 monitors: Sequence[PlaneMonitor] = (),
                 materials: Sequence[Material] = (Material(),), cells: np.ndarray | None = None,
                 fill: np.ndarray | None = None,
                 pec_edges: Sequence[np.ndarray] | None = None, mu_r: float = 1.0,
                 courant: float = 0.99, dtype: type = np.float32,
                 walls: dict[str, str] | None = None, pml_cells: int = 8,
                 backend: str = "auto") -> None:
        if not sources and not plane_waves and not any(p.waveform is not None for p in ports):
            raise ValueError("a simulation needs at least one source (an edge source, an "
                             "excited port or a plane wave)")
        self.walls = {face: "pec" for face in FACES}
        for face, wall in (walls or {}).items():
            if face not in FACES or wall not in WALLS:
                raise ValueError(f"walls take faces {', '.join(FACES)} and kinds "
                                 f"{', '.join(WALLS)}, not {face!r}: {wall!r}")
            self.walls[face] = wall
        self.grid = grid
        self.dtype = np.dtype(dtype)
        cells = np.zeros(grid.shape, np.uint8) if cells is None else np.asarray(cells)
        if cells.shape != grid.shape:
            raise ValueError(f"cells has shape {cells.shape}, the grid {grid.shape}")
        used = np.unique(cells)
        if used.size and (used[0] < 0 or used[-1] >= len(materials)):
            raise ValueError(f"cells name material {int(used[-1])}, the table has "
                             f"{len(materials)}")
        self.mu = MU0 * mu_r
        eps_r, sigma = cell_properties(cells, list(materials), fill)
        self.dt = grid.stable_dt(courant, float(eps_r.min()), mu_r)
        self.stores = _stores(grid.shape, self.dtype)
        self.e, self.h = _views(self.stores, grid.shape)
        # the E indices updated along each axis: the walls' planes too where they are PMC
        self.lo = np.array([0 if self.walls[f"{a}-"] == "pmc" else 1 for a in "xyz"])
        self.hi = np.array([n if self.walls[f"{a}+"] == "pmc" else n - 1
                            for a, n in zip("xyz", grid.shape, strict=True)])
        self.pml_cells = [(pml_cells if self.walls[f"{a}-"] == "pml" else 0,
                           pml_cells if self.walls[f"{a}+"] == "pml" else 0) for a in "xyz"]
        placed_ports = [(port, place(port, grid)) for port in ports]
        self.runs = {c: edge_runs(eps_r, sigma, c, self.dt, self.dtype,
                                  _port_sigma(placed_ports, c, self.e[c].shape),
                                  None if pec_edges is None else np.asarray(pec_edges[a], bool))
                     for a, c in enumerate(COMPONENTS)}
        del eps_r, sigma
        self.inverse = _inverse(grid.spacing, self.dtype)
        self.inverse_dual = _inverse(grid.dual, self.dtype)
        self.terms = pml.terms(grid, self.pml_cells, self.dt, self.lo, self.hi, self.runs,
                               self.dtype, self.inverse, self.inverse_dual)
        self.factors = _factors(self.inverse, self.inverse_dual, self.lo, self.hi, grid.shape)
        self.steps = 0
        self.levels = LEVELS
        self.sources = _Sources()
        for source in sources:
            self._place_source(source)
        self.taps = _Taps()
        self.ports = {port.name: self._place_port(port, edges) for port, edges in placed_ports}
        self.probes = {p.name: self._tap(p.component, self._place(p.component, p.point))[0]
                       for p in probes}
        self.samples: dict[str, list[float]] = {name: [] for name in self.probes}
        self.monitors = {m.name: m.placed(grid, self.e) for m in monitors}
        self.planes = {m.name: self._tap(m.component, self.monitors[m.name].where)[0]
                       for m in monitors}
        self.boxes = [TotalFieldBox(grid, w, self.dt, self.runs["ex"], self.runs["ez"])
                      for w in plane_waves]
        self.device = gpu.Device(self) if self._on_gpu(backend) else None

    def _on_gpu(self, backend: str) -> bool:
        """"auto": the GPU where numba finds one, the setup has no plane wave (its box
        corrects the fields on the host between the halves of a step) and it fits in the
        GPU's free memory (with a tenth to spare)."""
        if backend not in ("auto", "cpu", "gpu"):
            raise ValueError(f"backend must be auto, cpu or gpu, not {backend!r}")
        if backend == "cpu" or (backend == "auto" and (self.boxes or not gpu.available())):
            return False
        if not gpu.available():
            raise ValueError("backend gpu: numba finds no CUDA GPU here")
        if self.boxes:
            raise ValueError("backend gpu: plane waves run on the CPU only")
        needed, free = gpu.bytes_needed(self), gpu.free_bytes()
        if needed > 0.9 * free and backend == "gpu":
            raise ValueError(f"backend gpu: the simulation needs {needed / 2**20:,.2f} MB, "
                             f"the GPU has {free / 2**20:,.2f} MB free")
        return needed <= 0.9 * free

    # setup ------------------------------------------------------------------------------------

    def _place(self, component: str, point: tuple[float, float, float]) -> tuple[int, int, int]:
        if component not in COMPONENTS:
            raise ValueError(f"component must be one of {', '.join(COMPONENTS)}, not "
                             f"{component!r}")
        index = self.grid.edge_index(component, point)
        axis = COMPONENTS.index(component)
        if any(not self.lo[a] <= index[a] <= self.hi[a] for a in range(3) if a != axis):
            raise ValueError(f"the {component} edge at {tuple(point)} lies on a PEC wall, "
                             "where the field is held at 0: move it inside")
        for a, (low, high) in enumerate(self.pml_cells):
            n = self.grid.shape[a]
            if index[a] < low or index[a] > n - high - (1 if a == axis else 0):
                raise ValueError(f"the {component} edge at {tuple(point)} lies in the PML "
                                 f"along {'xyz'[a]}: move it inside")
        return index

    def _tap(self, component: str, index: tuple[int | slice, ...]
             ) -> tuple[slice, tuple[int, ...]]:
        return self.taps.add(component, index, self.e[component].shape)

    def _place_source(self, source: EdgeSource) -> None:
        index = self._place(source.component, source.point)
        axis = COMPONENTS.index(source.component)
        area = np.prod([self.grid.dual[a][index[a]] for a in range(3) if a != axis])
        runs = self.runs[source.component]
        cb = float(runs.cb[runs.classes[index]])
        self.sources.add(source.component, index, -cb * source.amplitude / float(area),
                         source.waveform)

    def _place_port(self, port: LumpedPort, edges: PortEdges) -> _Port:
        """A port's drive: the current V_s/R spread evenly over its cross-section."""
        if port.waveform is not None:
            runs = self.runs[port.component]
            cb = runs.cb[runs.classes[edges.index]].astype(np.float64)
            scales = -cb * port.amplitude / (port.resistance * edges.area)
            starts = [r[0] for r in edges.ranges]
            for offset in np.ndindex(*scales.shape):
                index = (starts[0] + offset[0], starts[1] + offset[1], starts[2] + offset[2])
                self.sources.add(port.component, index, float(scales[offset]), port.waveform)
        return _Port(port, edges, self._tap(port.component, edges.index))

    # time stepping ----------------------------------------------------------------------------

    def run(self, steps: int) -> None:
        """Advance `steps` time steps (H, then E with the sources at the half step). A small
        grid runs on one thread: waking the others would cost more than its sweep."""
        before = numba.get_num_threads()
        numba.set_num_threads(1 if self.grid.cells < PARALLEL_CELLS else before)
        try:
            room = max(self.levels, TAPPED_BYTES // max(1, self.taps.columns
                                                        * self.dtype.itemsize))
            while steps:
                count = min(steps, room)
                if count >= self.levels:
                    count -= count % self.levels
                self._leap(count)
                steps -= count
        finally:
            numba.set_num_threads(before)

    def _leap(self, count: int) -> None:
        """`count` steps in one call of the kernel (temporally blocked), or step by step
        where a plane wave's box corrects H and E between the two halves; then the taps'
        values to the monitors."""
        ch, e, h = self.dtype.type(self.dt / self.mu), self.e, self.h
        waves = self.sources.values(self.steps, count, self.dt)
        tapped = np.empty((count, self.taps.columns), self.dtype)
        if self.device is not None:
            self.device.run(count, waves, tapped)
        elif not self.boxes:
            levels = min(self.levels, count)
            self._kernel(kernels.BOTH, levels, count // levels, waves, tapped)
        for s in range(count if self.boxes else 0):
            step = np.ascontiguousarray(waves[:, s:s + 1])
            self._kernel(kernels.H_ONLY, 1, 1, step, tapped[s:s + 1])
            for box in self.boxes:
                box.correct_h(h, ch, self.inverse)
            self._kernel(kernels.E_ONLY, 1, 1, step, tapped[s:s + 1])
            for box in self.boxes:
                box.correct_e(e, self.inverse_dual)
        self._feed(tapped, waves)
        self.steps += count

    def arguments(self, h: dict[str, np.ndarray] | None = None,
                  terms: tuple[pml.Term, ...] | None = None) -> tuple[Any, ...]:
        """kernels.leap's first arguments: the fields' stores, spacings, walls, runs and CPML
        terms (other H stores or terms where given)."""
        f = self.stores if h is None else {**self.stores, **h}
        fy, fz, fyd, fzd = self.factors
        x, y, z = (_run_arrays(self.runs[c]) for c in COMPONENTS)
        return (f["ex"], f["ey"], f["ez"], f["hx"], f["hy"], f["hz"], self.inverse[0], fy, fz,
                self.dtype.type(self.dt / self.mu), self.inverse_dual[0], fyd, fzd, self.lo,
                self.hi, *x, *y, *z, self.terms if terms is None else terms)

    def _kernel(self, mode: int, levels: int, blocks: int, waves: np.ndarray,
                tapped: np.ndarray, h: dict[str, np.ndarray] | None = None,
                terms: tuple[pml.Term, ...] | None = None) -> None:
        rows, scales = self.sources.arrays()
        tiles = self._tiles(levels if mode == kernels.BOTH else 0)
        arguments = (*self.arguments(h, terms), tiles, levels, blocks, mode, rows, scales,
                     waves, self.taps.array(), tapped)
        kernels.leap(*arguments)

    def _tiles(self, levels: int) -> np.ndarray:
        """Where the tiles of x planes start (and the end): two per thread for the temporal
        blocks (tiles on alternate anti-diagonals run together; each wider than `levels` +
        1 planes), one per thread for a half step (`levels` 0)."""
        planes, threads = self.grid.shape[0] + 1, numba.get_num_threads()
        tiles = min(2 * threads, planes // (levels + 2)) if levels else min(threads, planes // 4)
        return np.linspace(0, planes, max(1, tiles) + 1).astype(np.int64)

    def _feed(self, tapped: np.ndarray, waves: np.ndarray) -> None:
        """The monitors' share of the taps, step by step from `self.steps` (E(n) before it
        was advanced), and each port's source voltage at the half steps."""
        for name, columns in self.probes.items():
            self.samples[name].extend(tapped[:, columns.start].tolist())
        for port in self.ports.values():
            columns, box = port.tap
            port.voltages.extend(port.edges.voltages(tapped[:, columns].reshape(-1, *box)))
            waveform = port.port.waveform
            port.driven.extend(np.zeros(len(tapped)) if waveform is None else
                               port.port.amplitude * waves[self.sources.row(waveform)])
        for name, recorder in self.monitors.items():
            shape = recorder.array[recorder.where].shape
            for s, values in enumerate(tapped[:, self.planes[name]]):
                step = self.steps + s
                recorder.record(step, step * self.dt, self.dt, values.reshape(shape))

    # results ----------------------------------------------------------------------------------

    def signal(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A probe's samples and their times (E at whole steps)."""
        samples = np.asarray(self.samples[name])
        return np.arange(samples.size) * self.dt, samples

    def port_signals(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A port's voltage at whole steps 0..n-1 and its current into the structure at the
        half steps between them (one fewer)."""
        port = self.ports[name]
        v = np.asarray(port.voltages)
        drive = np.asarray(port.driven[:v.size - 1])
        return v, (drive - (v[:-1] + v[1:]) / 2) / port.port.resistance

    def field_energy(self) -> float:
        """A measure of the field's energy (vacuum's weights, every cell's volume taken as
        the same): cheap enough to watch a simulation ring down."""
        electric = sum(float(np.vdot(a, a)) for a in self.e.values())
        magnetic = sum(float(np.vdot(a, a)) for a in self.h.values())
        return 0.5 * (EPS0 * electric + self.mu * magnetic)

    def energy(self) -> float:
        """The scheme's conserved energy (J) at the current whole step: 1/2 eps E(n)^2 plus
        1/2 mu H(n-1/2).H(n+1/2) over the cells' edge and face volumes."""
        g, e = self.grid, self.e
        (dx, dy, dz), (ddx, ddy, ddz) = g.spacing, g.dual
        after = {k: self.stores[k].copy() for k in self.h}
        no_pml = pml.terms(g, [(0, 0)] * 3, self.dt, self.lo, self.hi, self.runs, self.dtype,
                           (), ())
        self._kernel(kernels.H_ONLY, 1, 1, self.sources.values(self.steps, 1, self.dt),
                     np.empty((1, self.taps.columns), self.dtype), after, no_pml)
        volume = {"ex": (dx, ddy, ddz), "ey": (ddx, dy, ddz), "ez": (ddx, ddy, dz),
                  "hx": (ddx, dy, dz), "hy": (dx, ddy, dz), "hz": (dx, dy, ddz)}
        electric = sum(np.einsum("ijk,i,j,k->", self.runs[c].eps[self.runs[c].classes]
                                 * e[c].astype(np.float64) ** 2, *volume[c]) for c in e)
        later = _views(after, g.shape)[1]
        magnetic = sum(np.einsum("ijk,i,j,k->", self.h[c][INNER[c]].astype(np.float64)
                                 * later[c][INNER[c]].astype(np.float64), *volume[c])
                       for c in later)
        return 0.5 * (electric + self.mu * magnetic)

    # checkpoints ------------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """Everything that changes as it runs, to save and `restore` (a checkpoint)."""
        saved = {"steps": np.array(self.steps), **self.e, **self.h}
        saved.update({f"psi{i}": psi for i, psi in enumerate(self._all_psi())})
        saved.update({f"probe:{name}": np.asarray(v) for name, v in self.samples.items()})
        for name, port in self.ports.items():
            saved[f"port:{name}:v"] = np.asarray(port.voltages)
            saved[f"port:{name}:drive"] = np.asarray(port.driven)
        for name, monitor in self.monitors.items():
            saved.update({f"monitor:{name}:{k}": v for k, v in monitor.state().items()})
        for n, box in enumerate(self.boxes):
            saved.update({f"plane wave {n}:{k}": v for k, v in box.line.state().items()})
        return saved

    def _all_psi(self) -> list[np.ndarray]:
        return [term[3] for term in self.terms]

    def restore(self, saved: dict[str, np.ndarray]) -> None:
        """Continue from a `state()` of a simulation set up the same way."""
        self.steps = int(saved["steps"])
        for name, array in (*self.e.items(), *self.h.items()):
            array[...] = saved[name]
        for i, psi in enumerate(self._all_psi()):
            psi[...] = saved[f"psi{i}"]
        for name in self.samples:
            self.samples[name] = list(saved[f"probe:{name}"])
        for name, port in self.ports.items():
            port.voltages = list(saved[f"port:{name}:v"])
            port.driven = list(saved[f"port:{name}:drive"])
        for name, monitor in self.monitors.items():
            monitor.restore(_under(saved, f"monitor:{name}:"))
        for n, box in enumerate(self.boxes):
            box.line.restore(_under(saved, f"plane wave {n}:"))
        if self.device is not None:
            self.device.stale = True


def _under(saved: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries of a state named under `prefix`, without it."""
    return {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)}


def _port_sigma(ports: list[tuple[LumpedPort, PortEdges]], component: str,
                shape: tuple[int, ...]) -> np.ndarray | None:
    """The ports' conductivity on the `component` edges (None: no port on them)."""
    mine = [edges for port, edges in ports if port.component == component]
    if not mine:
        return None
    sigma = np.zeros(shape)
    for edges in mine:
        sigma[edges.index] += edges.sigma
    return sigma


def _run_arrays(runs: EdgeRuns
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return runs.start, runs.q0, runs.klass, runs.ca, runs.cb


def _stores(shape: tuple[int, int, int], dtype: np.dtype) -> dict[str, np.ndarray]:
    """The kernels' padded stores (kernels.py), one a component, all of one shape."""
    nx, ny, nz = shape
    return {c: np.zeros((nx + 2, ny + 2, nz + 2), dtype) for c in (*COMPONENTS, *INNER)}


def _views(stores: dict[str, np.ndarray], shape: tuple[int, int, int]
           ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each component's own extent in its store (E's edges, H's faces with their ghosts),
    for the stores given."""
    nx, ny, nz = shape
    extents = {"ex": (nx, ny + 1, nz + 1), "ey": (nx + 1, ny, nz + 1), "ez": (nx + 1, ny + 1, nz),
               "hx": (nx + 1, ny + 2, nz + 2), "hy": (nx + 2, ny + 1, nz + 2),
               "hz": (nx + 2, ny + 2, nz + 1)}
    views = {c: stores[c][:a, :b, :d] for c, (a, b, d) in extents.items() if c in stores}
    return ({c: v for c, v in views.items() if c in COMPONENTS},
            {c: v for c, v in views.items() if c in INNER})


def _factors(inverse: tuple[np.ndarray, ...], inverse_dual: tuple[np.ndarray, ...],
             lo: np.ndarray, hi: np.ndarray, shape: tuple[int, int, int]
             ) -> tuple[Any, ...]:
    """The inverse spacings along y and z as the kernels take them: at H's faces (row j + 1
    and column k + 1 of a plane hold face (j, k)'s) and at E's edges (row j, column k). Four
    scalars where each is one value over the faces or edges updated, else four planes: one
    kind or the other, not a mix, as numba compiles the kernel (~30 s) for each."""
    _, ny, nz = shape
    plane = (ny + 2, nz + 2)
    (_, iy, iz), (_, dy, dz) = inverse, inverse_dual
    spreads = ((iy, 0, 1), (iz, 1, 1), (dy, 0, 0), (dz, 1, 0))
    used = (iy, iz, dy[lo[1]:hi[1] + 1], dz[lo[2]:hi[2] + 1])
    if all(np.all(values == values[0]) for values in used):
        return tuple(values.dtype.type(values[0]) for values in used)

    def spread(values: np.ndarray, axis: int, shift: int) -> np.ndarray:
        line = np.zeros(plane[axis], values.dtype)
        line[shift:shift + values.size] = values
        rows = line[:, None] if axis == 0 else line[None, :]
        return np.ascontiguousarray(np.broadcast_to(rows, plane).ravel())

    return tuple(spread(*s) for s in spreads)


def _inverse(lengths: tuple[np.ndarray, np.ndarray, np.ndarray], dtype: np.dtype
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, z = ((1.0 / d).astype(dtype) for d in lengths)
    return x, y, z
