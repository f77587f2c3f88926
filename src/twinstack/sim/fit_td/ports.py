"""Lumped ports: a resistance R with a voltage source in series across a box of edges, and
the S-parameters their voltages and currents give.

On the grid a port is its Norton equivalent: the conductance 1/R spread over the port's edges
as a conductivity (each edge's class in the runs, so the kernels need nothing new) and a
source current V_s(t)/R spread evenly over its cross-section. Edges along the port's direction
are in series, edges side by side in parallel. The port's voltage is -integral E dl from its
low to its high end (the source drives current towards the high end, its + terminal), averaged
over the parallel lines; its current into the structure is what the source gives minus what
the resistance takes, V_s/R - V/R at the half steps, so the grid cell the port sits in belongs
to the structure it feeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from twinstack.sim.fit_td.grid import COMPONENTS, YeeGrid
from twinstack.sim.fit_td.sources import Waveform
from twinstack.sim.fit_td.spectrum import dft


@dataclass(frozen=True)
class LumpedPort:
    """A port across the `component` edges between corners `lo` and `hi` (edges whose centres
    lie between them along the component, node lines nearest them across). `waveform` None:
    a passive port, the resistance only (a matched load when R is the line's impedance)."""

    name: str
    component: str
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    resistance: float = 50.0
    waveform: Waveform | None = None
    amplitude: float = 1.0  # volts of the source's open-circuit voltage

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise ValueError(f"port {self.name}: component must be one of "
                             f"{', '.join(COMPONENTS)}, not {self.component!r}")
        if not self.resistance > 0 or not math.isfinite(self.resistance):
            raise ValueError(f"port {self.name}: the resistance must be a positive number of "
                             f"ohms, got {self.resistance}")


@dataclass(frozen=True)
class PortEdges:
    """Where a port lies: the index ranges of its edges (start, stop per axis), the
    conductivity that makes R, each series edge's length and the cross-section."""

    ranges: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    axis: int
    sigma: float
    lengths: np.ndarray
    area: float

    @property
    def index(self) -> tuple[slice, slice, slice]:
        a, b, c = (slice(*r) for r in self.ranges)
        return (a, b, c)

    def voltages(self, values: np.ndarray) -> list[float]:
        """-integral E dl along the port, averaged over its parallel lines, at each step:
        `values` (steps, *the port's box) its edges' E."""
        shape = [1, 1, 1, 1]
        shape[1 + self.axis] = self.lengths.size
        along = (values.astype(np.float64) * self.lengths.reshape(shape)).sum(axis=1 + self.axis)
        return (-along.reshape(len(values), -1).mean(axis=1)).tolist()


def place(port: LumpedPort, grid: YeeGrid) -> PortEdges:
    """The port's edges on `grid`, or ValueError when it covers none."""
    axis = COMPONENTS.index(port.component)
    lines = (grid.x, grid.y, grid.z)
    ranges = []
    for a, line in enumerate(lines):
        lo, hi = sorted((port.lo[a], port.hi[a]))
        if hi < line[0] or lo > line[-1]:
            raise ValueError(f"port {port.name} lies outside the grid ({line[0]:g} .. "
                             f"{line[-1]:g} along {'xyz'[a]})")
        if a == axis:
            centres = (line[1:] + line[:-1]) / 2
            inside = np.nonzero((centres >= lo) & (centres <= hi))[0]
            if inside.size == 0:
                raise ValueError(f"port {port.name} spans no {port.component} edge: it needs "
                                 f"at least one cell along {'xyz'[a]}")
            ranges.append((int(inside[0]), int(inside[-1]) + 1))
        else:
            first, last = (int(np.abs(line - v).argmin()) for v in (lo, hi))
            ranges.append((first, last + 1))
    lengths = grid.spacing[axis][ranges[axis][0]:ranges[axis][1]]
    area = 1.0
    for a in range(3):
        if a != axis:
            area *= float(grid.dual[a][ranges[a][0]:ranges[a][1]].sum())
    sigma = float(lengths.sum()) / (port.resistance * area)
    return PortEdges((ranges[0], ranges[1], ranges[2]), axis, sigma, lengths, area)


def waves(voltage: np.ndarray, current: np.ndarray, dt: float, resistance: float,
          frequencies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The incident and reflected power waves a, b at `frequencies` from the voltage at whole
    steps and the current at half steps."""
    v = dft(voltage, np.arange(voltage.size) * dt, frequencies)
    i = dft(current, (np.arange(current.size) + 0.5) * dt, frequencies)
    root = 2 * math.sqrt(resistance)
    return (v + resistance * i) / root, (v - resistance * i) / root
