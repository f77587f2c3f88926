"""FIT-TD against analytic answers: a PEC rectangular cavity's resonances (uniform and graded
grids), the scheme's energy conserved in a lossless closed box, and setups refused before any
step is computed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from twinstack.sim.fit_td import (
    EdgeSource,
    GaussianPulse,
    Material,
    ModulatedGaussian,
    Probe,
    Simulation,
    YeeGrid,
)
from twinstack.sim.fit_td.grid import C0
from twinstack.sim.fit_td.spectrum import peak_frequency

BOX = (1.0, 0.6, 0.8)  # metres: a x b x d
SOURCE_AT = (0.23, 0.17, 0.31)  # off every symmetry plane, so every mode is excited
PROBE_AT = (0.71, 0.43, 0.52)
COMPONENTS = ("ex", "ey", "ez")


def cavity_frequency(m: int, n: int, p: int) -> float:
    a, b, d = BOX
    return C0 / 2 * math.sqrt((m / a) ** 2 + (n / b) ** 2 + (p / d) ** 2)


def ring(grid: YeeGrid, steps: int, dtype: type = np.float32) -> tuple[Simulation, np.ndarray]:
    """A broadband pulse on three edges, then the cavity rings; the sum of the three
    components at one point."""
    pulse = GaussianPulse.up_to(1e9)
    sim = Simulation(grid, sources=[EdgeSource(c, SOURCE_AT, pulse) for c in COMPONENTS],
                     probes=[Probe(c, c, PROBE_AT) for c in COMPONENTS], dtype=dtype)
    sim.run(steps)
    return sim, sum(sim.signal(c)[1] for c in COMPONENTS)


MODES = {"TE101": (1, 0, 1), "TM110": (1, 1, 0), "TE011": (0, 1, 1)}


@pytest.mark.parametrize("graded", [False, True], ids=["uniform", "graded"])
def test_cavity_resonances_within_half_a_percent(graded):
    """~20 cells per wavelength at the highest of the three modes (312 MHz, 0.96 m)."""
    if graded:  # cells from 0.035 to 0.05 m and back along every axis, smoothly
        axes = [_graded(size, 0.05, 0.035) for size in BOX]
        grid = YeeGrid(*axes)
    else:
        grid = YeeGrid.uniform(BOX, 0.05)
    sim, signal = ring(grid, 12_000)
    for name, mode in MODES.items():
        expected = cavity_frequency(*mode)
        found = peak_frequency(signal, sim.dt, 0.97 * expected, 1.03 * expected)
        assert abs(found - expected) / expected < 5e-3, (name, found, expected)


def _graded(size: float, coarse: float, fine: float) -> np.ndarray:
    """Node lines whose spacing goes from `coarse` at the ends to `fine` in the middle: equal
    steps of the running cell count."""
    x = np.linspace(0.0, size, 2001)
    per_metre = 1.0 / (coarse + (fine - coarse) * np.sin(np.pi * x / size) ** 2)
    cells = np.concatenate([[0.0], np.cumsum((per_metre[1:] + per_metre[:-1]) / 2 * np.diff(x))])
    return np.interp(np.linspace(0.0, cells[-1], round(cells[-1]) + 1), cells, x)


def test_graded_lines_are_graded():
    line = _graded(1.0, 0.05, 0.035)
    steps = np.diff(line)
    assert line[0] == 0 and line[-1] == pytest.approx(1.0)
    assert steps.max() / steps.min() > 1.3 and np.abs(np.diff(steps)).max() < 0.002


@pytest.mark.parametrize("dtype,tolerance", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_energy_is_conserved_in_a_lossless_closed_cavity(dtype, tolerance):
    grid = YeeGrid.uniform(BOX, 0.05)
    sim, _ = ring(grid, 100, dtype)  # the pulse is over by step ~40
    start = sim.energy()
    sim.run(10_000)
    assert start > 0
    assert abs(sim.energy() - start) / start < tolerance


def test_the_stable_step_follows_the_smallest_cells():
    grid = YeeGrid(np.linspace(0, 1, 11), np.linspace(0, 1, 21), np.array([0, 0.01, 0.5, 1]))
    limit = 1 / (C0 * math.sqrt(1 / 0.1**2 + 1 / 0.05**2 + 1 / 0.01**2))
    assert grid.stable_dt(1.0) == pytest.approx(limit)
    assert grid.stable_dt(0.5, eps_r=4.0) == pytest.approx(limit)  # half as fast, half the step


def test_bad_setups_are_refused_before_any_step():
    grid = YeeGrid.uniform(BOX, 0.05)
    pulse = GaussianPulse.up_to(1e9)
    with pytest.raises(ValueError, match="at least one source"):
        Simulation(grid, sources=[])
    with pytest.raises(ValueError, match=r"outside the grid \(0 \.\. 1 along x\)"):
        Simulation(grid, sources=[EdgeSource("ez", (1.5, 0.3, 0.4), pulse)])
    with pytest.raises(ValueError, match="on a PEC wall"):
        Simulation(grid, sources=[EdgeSource("ez", (0.0, 0.3, 0.4), pulse)])
    with pytest.raises(ValueError, match="component must be one of ex, ey, ez"):
        Simulation(grid, sources=[EdgeSource("hz", (0.5, 0.3, 0.4), pulse)])
    with pytest.raises(ValueError, match=r"Courant factor must be in \(0, 1\]"):
        Simulation(grid, sources=[EdgeSource("ez", (0.5, 0.3, 0.4), pulse)], courant=1.2)
    with pytest.raises(ValueError, match="must increase strictly"):
        YeeGrid(np.array([0, 1, 1, 2]), np.linspace(0, 1, 3), np.linspace(0, 1, 3))


def test_a_plane_wave_crosses_a_parallel_plate_guide_at_the_speed_of_light():
    """PEC plates at z = 0 and z = 5 cm, PMC walls at y = 0 and y = 5 cm: the TEM wave is a
    plane wave. A current sheet at x = 1 m sends a pulse (30 cells per wavelength at its top
    frequency); its peak passes x = 1.5 m and x = 2.5 m 1 m / c apart, uniform across y (on
    the PMC walls too)."""
    grid = YeeGrid.uniform((3.0, 0.05, 0.05), 0.01)
    pulse = GaussianPulse.up_to(1e9)
    sheet = [EdgeSource("ez", (1.0, y, z), pulse)
             for y in grid.y for z in (grid.z[:-1] + grid.z[1:]) / 2]
    probes = [Probe("near", "ez", (1.5, 0.025, 0.025)), Probe("far", "ez", (2.5, 0.025, 0.025)),
              Probe("wall", "ez", (2.5, 0.0, 0.025))]
    sim = Simulation(grid, sources=sheet, probes=probes, walls={"y-": "pmc", "y+": "pmc"})
    sim.run(round(9e-9 / sim.dt))
    arrivals = []
    for name in ("near", "far"):
        t, e = sim.signal(name)
        i = int(np.argmax(np.abs(e)))
        left, middle, right = np.abs(e[i - 1:i + 2])
        arrivals.append(t[i] + 0.5 * (left - right) / (left - 2 * middle + right) * sim.dt)
    speed = 1.0 / (arrivals[1] - arrivals[0])
    assert abs(speed - C0) / C0 < 2e-3
    far, wall = sim.signal("far")[1], sim.signal("wall")[1]
    assert np.abs(far).max() > 0 and np.allclose(wall, far, atol=1e-4 * np.abs(far).max())


def test_walls_are_named_by_face_and_kind():
    grid = YeeGrid.uniform(BOX, 0.05)
    with pytest.raises(ValueError, match="walls take faces x-, x\\+"):
        Simulation(grid, sources=[EdgeSource("ez", (0.5, 0.3, 0.4), GaussianPulse(1e-9))],
                   walls={"top": "pmc"})
    on_pmc = EdgeSource("ez", (0.5, 0.0, 0.4), GaussianPulse(1e-9))  # allowed on a PMC wall
    Simulation(grid, sources=[on_pmc], walls={"y-": "pmc"})


def test_fresnel_reflection_from_a_dielectric_half_space_within_two_percent():
    """The same guide with eps_r = 4 from x = 2 m on: the pulse comes back from the interface
    with r = (1 - 2) / (1 + 2) = -1/3 of its amplitude."""
    grid = YeeGrid.uniform((3.0, 0.05, 0.05), 0.01)
    cells = np.zeros(grid.shape, np.uint8)
    cells[200:] = 1
    pulse = GaussianPulse.up_to(1e9)
    sheet = [EdgeSource("ez", (1.0, y, z), pulse)
             for y in grid.y for z in (grid.z[:-1] + grid.z[1:]) / 2]
    sim = Simulation(grid, sources=sheet, probes=[Probe("p", "ez", (1.5, 0.025, 0.025))],
                     materials=[Material(), Material(eps_r=4.0)], cells=cells,
                     walls={"y-": "pmc", "y+": "pmc"})
    sim.run(round(9e-9 / sim.dt))
    t, e = sim.signal("p")
    incident = e[t < 5e-9][np.abs(e[t < 5e-9]).argmax()]  # at 3.6 ns; reflected at 6.9 ns
    reflected = e[t >= 5e-9][np.abs(e[t >= 5e-9]).argmax()]
    assert abs(reflected / incident - (-1 / 3)) < 0.02 / 3


def test_materials_are_checked():
    grid = YeeGrid.uniform(BOX, 0.05)
    source = [EdgeSource("ez", (0.5, 0.3, 0.4), GaussianPulse(1e-9))]
    with pytest.raises(ValueError, match="eps_r must be at least 1"):
        Material(eps_r=0.5)
    with pytest.raises(ValueError, match="cells name material 3, the table has 1"):
        Simulation(grid, sources=source, cells=np.full(grid.shape, 3, np.uint8))
    with pytest.raises(ValueError, match=r"cells has shape \(2, 2, 2\)"):
        Simulation(grid, sources=source, cells=np.zeros((2, 2, 2), np.uint8))


def test_pulses_have_the_spectrum_they_are_made_for():
    """A Gaussian `up_to(f)` peaks at 0 Hz and is 20 dB down at f; a modulated Gaussian peaks
    at its centre."""
    dt = 1e-12
    t = np.arange(20_000) * dt
    frequencies = np.fft.rfftfreq(t.size, dt)

    def spectrum(pulse) -> np.ndarray:
        return np.abs(np.fft.rfft(pulse(t)))

    baseband = spectrum(GaussianPulse.up_to(2e9))
    assert baseband.argmax() == 0
    at_2ghz = baseband[np.abs(frequencies - 2e9).argmin()] / baseband.max()
    assert 20 * np.log10(at_2ghz) == pytest.approx(-20, abs=0.5)
    modulated = spectrum(ModulatedGaussian(3e9, 2e9))
    assert frequencies[modulated.argmax()] == pytest.approx(3e9, abs=0.06e9)
