"""FIT-TD: the Finite Integration Technique in the time domain on a staggered (Yee) grid.

Numerics only (no services, no I/O): `grid` (node lines, graded or uniform, and the stable time
step), `materials` (a table, an index per cell, runs of one class per edge line), `sources`
(pulses), `ports` (lumped ports, S-parameters), `planewave` (TF/SF), `pml` (the CPML's
profiles), `monitors` (DFT and snapshot planes), `spectrum`, `solver` (fields, the leapfrog,
probes, energy, checkpoints), and `kernels` (the numba loops). Units are SI throughout.
"""

from twinstack.sim.fit_td.grid import YeeGrid
from twinstack.sim.fit_td.materials import Material
from twinstack.sim.fit_td.planewave import PlaneWave
from twinstack.sim.fit_td.solver import EdgeSource, Probe, Simulation
from twinstack.sim.fit_td.sources import GaussianPulse, ModulatedGaussian

__all__ = ["EdgeSource", "GaussianPulse", "Material", "ModulatedGaussian", "PlaneWave", "Probe",
           "Simulation", "YeeGrid"]
