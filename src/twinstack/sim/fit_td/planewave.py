"""A plane wave by total-field/scattered-field (TF/SF): inside a box the grid holds the total
field, outside it only what the structure scatters. The wave travels along +z with E along x;
its fields come from a 1-D Yee line on the grid's own z lines and time step, so its numerical
dispersion is the 3-D grid's at normal incidence and the box's faces let nothing through.

Each face corrects the updates that reach across it: an E on the face reads an H outside
(which lacks the incident part), an H just outside reads an E on the face (which has it). With
E along x and H along y only these terms exist: ex on the z faces, hy just outside them, ez on
the x faces and hz just outside the y faces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from twinstack.sim.fit_td.grid import EPS0, MU0, YeeGrid
from twinstack.sim.fit_td.materials import EdgeRuns
from twinstack.sim.fit_td.sources import Waveform

PAD = 60  # 1-D cells beyond each end of the grid's z lines: an absorber and the source
ABSORBER = 48  # of them, graded lossy cells (matched: sigma_m / mu0 = sigma / eps0)
ETA0 = math.sqrt(MU0 / EPS0)


@dataclass(frozen=True)
class PlaneWave:
    """A plane wave travelling along +z, E along x, amplitude * waveform(t) V/m where it is
    launched (PAD - ABSORBER cells below the grid), filling the box between corners lo and hi
    (node lines nearest them)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    waveform: Waveform
    amplitude: float = 1.0


class IncidentLine:
    """The incident field on a 1-D Yee line along z: ex at the grid's z nodes (index k of the
    3-D grid is `k + PAD` here) and hy between them, advanced with the 3-D grid's time step."""

    def __init__(self, z: np.ndarray, dt: float, wave: PlaneWave) -> None:
        first, last = z[1] - z[0], z[-1] - z[-2]
        nodes = np.concatenate([z[0] - first * np.arange(PAD, 0, -1), z,
                                z[-1] + last * np.arange(1, PAD + 1)])
        spacing = np.diff(nodes)
        dual = np.concatenate([[spacing[0] / 2], (spacing[:-1] + spacing[1:]) / 2,
                               [spacing[-1] / 2]])
        depth = np.zeros(nodes.size)  # 0 inside, 1 at the outer ends
        depth[:ABSORBER] = np.linspace(1, 0, ABSORBER + 1)[:-1]
        depth[-ABSORBER:] = np.linspace(0, 1, ABSORBER + 1)[1:]
        sigma = (0.8 * 4 / (ETA0 * first)) * depth**3  # S/m at the nodes
        centres = (depth[1:] + depth[:-1]) / 2
        sigma_m = (0.8 * 4 / (ETA0 * first)) * centres**3 * MU0 / EPS0
        loss_e, loss_h = sigma * dt / (2 * EPS0), sigma_m * dt / (2 * MU0)
        self.ca, self.cb = (1 - loss_e) / (1 + loss_e), dt / EPS0 / (1 + loss_e) / dual
        self.da, self.db = (1 - loss_h) / (1 + loss_h), dt / MU0 / (1 + loss_h) / spacing
        self.ex = np.zeros(nodes.size)
        self.hy = np.zeros(nodes.size - 1)
        self.source = PAD - (PAD - ABSORBER) // 2
        self.wave, self.dt = wave, dt
        # a sheet of current K radiates E = -eta0 K / 2 each way: K = -2 A / eta0 for A
        self.drive = 2.0 * wave.amplitude / ETA0 * dt / EPS0 / dual[self.source]
        self.steps = 0

    def advance_h(self) -> None:
        """hy from n-1/2 to n+1/2 (ex at n)."""
        self.hy = self.da * self.hy - self.db * (self.ex[1:] - self.ex[:-1])

    def advance_e(self) -> None:
        """ex from n to n+1 (hy at n+1/2), the source at n+1/2."""
        inner = self.ca[1:-1] * self.ex[1:-1] - self.cb[1:-1] * (self.hy[1:] - self.hy[:-1])
        self.ex[1:-1] = inner
        t = (self.steps + 0.5) * self.dt
        self.ex[self.source] += self.drive * float(self.wave.waveform(t))
        self.steps += 1

    def e_between(self, k0: int, k1: int) -> np.ndarray:
        """ex at the 3-D grid's z nodes k0..k1."""
        return self.ex[PAD + k0:PAD + k1 + 1]

    def h_between(self, k0: int, k1: int) -> np.ndarray:
        """hy at the centres k0 + 1/2 .. k1 + 1/2 (between 3-D nodes k and k + 1)."""
        return self.hy[PAD + k0:PAD + k1 + 1]

    def state(self) -> dict[str, np.ndarray]:
        return {"ex": self.ex, "hy": self.hy, "steps": np.array(self.steps)}

    def restore(self, saved: dict[str, np.ndarray]) -> None:
        self.ex[...], self.hy[...] = saved["ex"], saved["hy"]
        self.steps = int(saved["steps"])


def box_indices(grid: YeeGrid, wave: PlaneWave) -> tuple[int, int, int, int, int, int]:
    """The box's node indices i0, i1, j0, j1, k0, k1, or ValueError when it is not inside the
    grid with room around it (one cell at least: the scattered field lies outside)."""
    found = []
    for a, line in enumerate((grid.x, grid.y, grid.z)):
        lo, hi = sorted((wave.lo[a], wave.hi[a]))
        first, last = (int(np.abs(line - v).argmin()) for v in (lo, hi))
        if first < 1 or last > line.size - 2 or last <= first:
            raise ValueError(f"the plane wave's box must lie inside the grid with a cell "
                             f"around it and span a cell along {'xyz'[a]} ({line[0]:g} .. "
                             f"{line[-1]:g})")
        found += [first, last]
    return found[0], found[1], found[2], found[3], found[4], found[5]


class TotalFieldBox:
    """A plane wave's box on the grid and the corrections its faces make each step."""

    def __init__(self, grid: YeeGrid, wave: PlaneWave, dt: float, ex: EdgeRuns,
                 ez: EdgeRuns) -> None:
        self.index = box_indices(grid, wave)
        i0, i1, j0, j1, k0, k1 = self.index
        self.line = IncidentLine(grid.z, dt, wave)
        self.cb_ex = (ex.cb[ex.classes[i0:i1, j0:j1 + 1, k0]],
                      ex.cb[ex.classes[i0:i1, j0:j1 + 1, k1]])
        self.cb_ez = (ez.cb[ez.classes[i0, j0:j1 + 1, k0:k1]],
                      ez.cb[ez.classes[i1, j0:j1 + 1, k0:k1]])

    def correct_h(self, h: dict[str, np.ndarray], ch: float, inverse: tuple[np.ndarray, ...]
                  ) -> None:
        """After H's update (E at step n): the H just outside reads E on the faces."""
        i0, i1, j0, j1, k0, k1 = self.index
        _, idy, idz = inverse
        e = self.line.e_between(k0, k1)
        h["hy"][i0 + 1:i1 + 1, j0:j1 + 1, k0] += ch * e[0] * idz[k0 - 1]
        h["hy"][i0 + 1:i1 + 1, j0:j1 + 1, k1 + 1] -= ch * e[-1] * idz[k1]
        h["hz"][i0 + 1:i1 + 1, j0, k0:k1 + 1] -= ch * e * idy[j0 - 1]
        h["hz"][i0 + 1:i1 + 1, j1 + 1, k0:k1 + 1] += ch * e * idy[j1]
        self.line.advance_h()

    def correct_e(self, e: dict[str, np.ndarray], inverse_dual: tuple[np.ndarray, ...]
                  ) -> None:
        """After E's update (H at step n + 1/2): E on the faces reads the H outside."""
        i0, i1, j0, j1, k0, k1 = self.index
        idxd, _, idzd = inverse_dual
        h = self.line.h_between(k0 - 1, k1)  # centres k0 - 1/2 .. k1 + 1/2
        e["ex"][i0:i1, j0:j1 + 1, k0] += self.cb_ex[0] * h[0] * idzd[k0]
        e["ex"][i0:i1, j0:j1 + 1, k1] -= self.cb_ex[1] * h[-1] * idzd[k1]
        e["ez"][i0, j0:j1 + 1, k0:k1] -= self.cb_ez[0] * h[1:-1] * idxd[i0]
        e["ez"][i1, j0:j1 + 1, k0:k1] += self.cb_ez[1] * h[1:-1] * idxd[i1]
        self.line.advance_e()
