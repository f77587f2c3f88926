"""Run by test_fit_td.py in a process of its own with NUMBA_ENABLE_CUDASIM=1 (numba reads it
at import): the GPU kernels (sim/fit_td/gpu.py) on numba's CUDA simulator against the CPU
kernels, from the same random fields, with materials, a CPML on three faces, PMC walls, a
source, a port, a probe and a DFT plane; and the choice of backend when the GPU is too small.
Prints each array's largest difference relative to its largest value, and what the choice
did, as JSON."""

from __future__ import annotations

import json

import numpy as np

from twinstack.sim.fit_td import EdgeSource, GaussianPulse, Material, Probe, Simulation, YeeGrid
from twinstack.sim.fit_td import gpu as fitd_gpu
from twinstack.sim.fit_td.grid import COMPONENTS
from twinstack.sim.fit_td.monitors import FieldDFT
from twinstack.sim.fit_td.ports import LumpedPort
from twinstack.sim.fit_td.solver import INNER

STEPS = 5


def simulation(backend: str) -> Simulation:
    grid = YeeGrid.uniform((0.09, 0.07, 0.06), 0.01)
    cells = np.zeros(grid.shape, np.uint8)
    cells[3:6, 2:5, 1:4] = 1
    return Simulation(
        grid, sources=[EdgeSource("ez", (0.05, 0.03, 0.035), GaussianPulse(1e-10))],
        ports=[LumpedPort("p", "ey", (0.06, 0.02, 0.03), (0.06, 0.04, 0.03), 50.0,
                          GaussianPulse(2e-10))],
        probes=[Probe("a", "ex", (0.045, 0.03, 0.03))],
        monitors=[FieldDFT("d", "ez", "y", 0.03, frequencies=(1e9,))],
        materials=[Material(), Material(4.4, 0.02)], cells=cells, pml_cells=2,
        walls={"x-": "pml", "y+": "pml", "z-": "pml", "z+": "pmc", "x+": "pmc"},
        backend=backend)


def main() -> None:
    rng = np.random.default_rng(3)
    cpu, gpu = simulation("cpu"), simulation("gpu")
    start = {name: np.array(array) for name, array in cpu.state().items()}  # not live views
    for name, array in start.items():
        if name.startswith(("e", "h", "psi")) and array.size:
            array[...] = rng.standard_normal(array.shape)
    held_at_zero(cpu, start)
    for sim in (cpu, gpu):
        sim.restore(start)
        sim.run(STEPS)
    found, wanted = cpu.state(), gpu.state()
    differences = {name: float(np.abs(found[name] - wanted[name]).max()
                               / max(np.abs(found[name]).max(), 1e-30))
                   for name in found if found[name].size}
    print(json.dumps({"differences": differences, "too_small": too_small()}))


def held_at_zero(sim: Simulation, fields: dict[str, np.ndarray]) -> None:
    """Zero what a simulation holds at 0 (the CPU's kernels reset it after each plane): the
    tangential E on PEC walls and H's ghost layers."""
    for axis, name in enumerate(COMPONENTS):
        for other in (a for a in range(3) if a != axis):
            for outside in (slice(0, sim.lo[other]), slice(sim.hi[other] + 1, None)):
                index: list[slice] = [slice(None)] * 3
                index[other] = outside
                fields[name][tuple(index)] = 0
    for name, inner in INNER.items():
        ghosts = np.ones(fields[name].shape, bool)
        ghosts[inner] = False
        fields[name][ghosts] = 0


def too_small() -> dict[str, object]:
    """A GPU with 16 kB free (the simulator reports infinite memory: its figure is replaced):
    `auto` stays on the CPU, `gpu` says what it needs."""
    fitd_gpu.free_bytes = lambda: 2.0**14
    refused = ""
    try:
        simulation("gpu")
    except ValueError as exc:
        refused = str(exc)
    return {"auto_on_gpu": simulation("auto").device is not None, "refused": refused}


if __name__ == "__main__":
    main()
