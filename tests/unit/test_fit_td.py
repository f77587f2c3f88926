"""FIT-TD against analytic answers: a PEC rectangular cavity's resonances (uniform and graded
grids, PEC edges inside, fill fractions), the scheme's energy conserved in a lossless closed
box, a plane wave's speed and Fresnel reflection, the CPML's reflection, lumped ports' S11,
DFT monitors, checkpoints that resume bit for bit, and setups refused before any step is
computed."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

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
from twinstack.sim.fit_td.monitors import FieldDFT, Snapshot
from twinstack.sim.fit_td.planewave import PlaneWave
from twinstack.sim.fit_td.pml import ETA0
from twinstack.sim.fit_td.ports import LumpedPort, waves
from twinstack.sim.fit_td.solver import LEVELS
from twinstack.sim.fit_td.spectrum import dft, peak_frequency

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


GUIDE_WALLS = {"y-": "pmc", "y+": "pmc"}  # with PEC at z: a parallel-plate guide, TEM along x


def guide_pulse(length: float, start: float, walls: dict[str, str]) -> np.ndarray:
    """ez at 0.3 m past a current sheet, in a guide `length` long whose x = 0 is at `start`."""
    grid = YeeGrid.uniform((length, 0.05, 0.05), 0.01)
    pulse = GaussianPulse.up_to(1e9)
    sheet = [EdgeSource("ez", (start + 0.3, y, z), pulse)
             for y in grid.y for z in (grid.z[:-1] + grid.z[1:]) / 2]
    sim = Simulation(grid, sources=sheet, probes=[Probe("p", "ez", (start + 0.6, 0.025, 0.025))],
                     walls={**GUIDE_WALLS, **walls})
    sim.run(round(12e-9 / sim.dt))
    return sim.signal("p")[1]


def reflection_db(test: np.ndarray, reference: np.ndarray) -> float:
    """What the absorbing walls sent back, relative to the pulse: the difference from a
    domain so large that nothing comes back from its walls within the time compared."""
    n = min(test.size, reference.size)
    return 20 * math.log10(np.abs(test[:n] - reference[:n]).max() / np.abs(reference[:n]).max())


def test_the_cpml_absorbs_a_plane_wave_to_below_minus_40_db():
    """The guide 1 m long with an 8-cell CPML at both ends, against one 8 m long with the
    same sheet and probe in its middle, over 12 ns (the long guide's walls answer after 20)."""
    absorbed = guide_pulse(1.0, 0.0, {"x-": "pml", "x+": "pml"})
    reference = guide_pulse(8.0, 3.5, {})
    assert reflection_db(absorbed, reference) < -40


def test_the_cpml_absorbs_a_point_source_from_every_side():
    """A dipole (1-3 GHz: no static charge left behind, which no absorber takes) in a 30^3
    box of 5 mm cells with the CPML on all six faces (8 cells: 14 cells of free space around
    the source), against a 90^3 PEC box; one probe off the dipole's side, one at grazing
    incidence to the nearest face."""
    faces = {face: "pml" for face in ("x-", "x+", "y-", "y+", "z-", "z+")}

    def record(cells: int, walls: dict[str, str]) -> Simulation:
        size = cells * 0.005
        centre = size / 2
        grid = YeeGrid.uniform((size, size, size), 0.005)
        sim = Simulation(grid, sources=[EdgeSource("ez", (centre,) * 3,
                                                   ModulatedGaussian(2e9, 2e9))],
                         probes=[Probe("side", "ez", (centre + 0.03, centre + 0.01, centre)),
                                 Probe("grazing", "ex", (centre + 0.025, centre,
                                                         centre + 0.03))], walls=walls)
        sim.run(round(2.4e-9 / sim.dt))  # the 90^3 box's walls answer after 2.6 ns
        return sim

    absorbed, reference = record(30, faces), record(90, {})
    for name in ("side", "grazing"):
        assert reflection_db(absorbed.signal(name)[1], reference.signal(name)[1]) < -50, name


def line_port(resistance: float) -> tuple[Simulation, float]:
    """A lumped port across the middle of a parallel-plate line (PEC plates 1 cm apart in y,
    PMC walls in x, 1 cm wide, 33+ cells per wavelength up to 4.5 GHz) that runs 10 cm each
    way into a CPML: it sees two lines in parallel, eta0 h / w / 2 = 188 ohms."""
    size = (0.01, 0.01, 0.2)
    grid = YeeGrid.uniform(size, 0.002)
    port = LumpedPort("p1", "ey", (0, 0, 0.1), (0.01, 0.01, 0.1), resistance=resistance,
                      waveform=ModulatedGaussian(3e9, 4e9))
    sim = Simulation(grid, ports=[port], walls={"x-": "pmc", "x+": "pmc", "z-": "pml",
                                                "z+": "pml"}, pml_cells=10)
    sim.run(round(6e-9 / sim.dt))
    return sim, ETA0 * 0.01 / 0.01 / 2


BAND = np.linspace(1.5e9, 4.5e9, 13)


def s11(sim: Simulation, resistance: float) -> np.ndarray:
    v, i = sim.port_signals("p1")
    a, b = waves(v, i, sim.dt, resistance, BAND)
    return b / a


def test_a_matched_lumped_port_reflects_below_minus_30_db():
    _, line = line_port(1.0)
    matched, _ = line_port(line)
    assert (20 * np.log10(np.abs(s11(matched, line))) < -30).all()


@pytest.mark.parametrize("ratio", [2.0, 1 / 3])
def test_a_mismatched_port_sees_the_reflection_circuit_theory_gives(ratio):
    """(Z - R) / (Z + R): -1/3 for R = 2Z, +1/2 for R = Z/3, within 1 %."""
    _, line = line_port(1.0)
    sim, _ = line_port(ratio * line)
    expected = (1 - ratio) / (1 + ratio)
    assert np.abs(s11(sim, ratio * line) - expected).max() < 0.01 * abs(expected)


def test_a_dft_plane_holds_the_travelling_wave_of_its_frequency():
    """On the matched line the DFT plane through its axis shows a wave whose phase turns by
    2 pi per c / f (within 1 %) and whose amplitude stays constant (1 %), and its phasor at
    one point equals the DFT of a probe's signal there."""
    size = (0.01, 0.01, 0.2)
    grid = YeeGrid.uniform(size, 0.002)
    frequency = 3e9
    port = LumpedPort("p1", "ey", (0, 0, 0.1), (0.01, 0.01, 0.1),
                      resistance=ETA0 / 2, waveform=ModulatedGaussian(frequency, 4e9))
    sim = Simulation(grid, ports=[port], probes=[Probe("p", "ey", (0.004, 0.005, 0.14))],
                     monitors=[FieldDFT("plane", "ey", "x", 0.004, (frequency,)),
                               Snapshot("frames", "ey", "x", 0.004, every=50)],
                     walls={"x-": "pmc", "x+": "pmc", "z-": "pml", "z+": "pml"}, pml_cells=10)
    sim.run(round(6e-9 / sim.dt))
    phasors = sim.monitors["plane"].phasors[0, 2]  # y = 4 mm, along z
    ahead = phasors[60:80]  # 12..16 cm: between the port and the PML
    turns = np.unwrap(np.angle(ahead))
    wavelength = 2 * np.pi / abs(np.polyfit(grid.z[60:80], turns, 1)[0])
    assert wavelength == pytest.approx(C0 / frequency, rel=0.01)
    assert np.abs(ahead).std() / np.abs(ahead).mean() < 0.01
    t, samples = sim.signal("p")
    assert phasors[70] == pytest.approx(dft(samples, t, np.array([frequency]))[0], rel=1e-6)
    frames = sim.monitors["frames"]
    assert frames.steps == list(range(0, sim.steps, 50)) and frames.frames[0].shape == (5, 101)


def test_a_checkpoint_resumes_bit_for_bit():
    """Run 300 steps; or run 120, save the state, set up anew, restore and run 180: every
    field, the CPML's memory, probes, ports, monitors and the plane wave's line are
    identical."""

    def setup() -> Simulation:
        grid = YeeGrid.uniform((0.01, 0.01, 0.2), 0.002)
        port = LumpedPort("p1", "ey", (0, 0, 0.1), (0.01, 0.01, 0.1), resistance=100.0,
                          waveform=ModulatedGaussian(3e9, 4e9))
        wave = PlaneWave((0.002, 0.002, 0.03), (0.008, 0.008, 0.07), GaussianPulse.up_to(3e9))
        return Simulation(grid, ports=[port], plane_waves=[wave],
                          probes=[Probe("p", "ey", (0.004, 0.005, 0.14))],
                          monitors=[FieldDFT("plane", "ey", "x", 0.004, (2e9, 3e9)),
                                    Snapshot("frames", "ey", "x", 0.004, every=25)],
                          walls={"x-": "pmc", "x+": "pmc", "z-": "pml", "z+": "pml"})

    whole = setup()
    whole.run(300)
    first = setup()
    first.run(120)
    saved = {k: np.array(v, copy=True) for k, v in first.state().items()}
    resumed = setup()
    resumed.restore(saved)
    resumed.run(180)
    expected, found = whole.state(), resumed.state()
    assert expected.keys() == found.keys() and any(k.startswith("psi") for k in found)
    assert any(k.startswith("plane wave") for k in found)
    for key in expected:
        assert np.array_equal(expected[key], found[key]), key


def test_pec_edges_make_a_wall_inside_the_box():
    """PEC edges on the plane x = 1 m of a 1.2 m box: the part left of it resonates as the
    1 x 0.6 x 0.8 m cavity (TE101 within 0.5 %)."""
    grid = YeeGrid.uniform((1.2, 0.6, 0.8), 0.05)
    nx, ny, nz = grid.shape
    wall = [np.zeros((nx, ny + 1, nz + 1), bool), np.zeros((nx + 1, ny, nz + 1), bool),
            np.zeros((nx + 1, ny + 1, nz), bool)]
    wall[1][20], wall[2][20] = True, True  # ey and ez on x = 1.0
    pulse = GaussianPulse.up_to(1e9)
    sim = Simulation(grid, sources=[EdgeSource(c, SOURCE_AT, pulse) for c in COMPONENTS],
                     probes=[Probe(c, c, PROBE_AT) for c in COMPONENTS], pec_edges=wall)
    sim.run(8_000)
    signal = sum(sim.signal(c)[1] for c in COMPONENTS)
    expected = cavity_frequency(1, 0, 1)
    found = peak_frequency(signal, sim.dt, 0.97 * expected, 1.03 * expected)
    assert abs(found - expected) / expected < 5e-3


@pytest.mark.parametrize("fill,eps_r", [(1.0, 2.0), (0.5, 1.5)])
def test_fill_fractions_mix_a_cell_with_the_background(fill, eps_r):
    """A cavity of material eps_r = 2 in every cell, filled wholly or half: TE101 moves to
    f / sqrt(2) or f / sqrt(1.5) (0.5 %)."""
    grid = YeeGrid.uniform(BOX, 0.05)
    pulse = GaussianPulse.up_to(1e9)
    sim = Simulation(grid, sources=[EdgeSource(c, SOURCE_AT, pulse) for c in COMPONENTS],
                     probes=[Probe(c, c, PROBE_AT) for c in COMPONENTS],
                     materials=[Material(), Material(eps_r=2.0)],
                     cells=np.ones(grid.shape, np.uint8), fill=np.full(grid.shape, fill))
    sim.run(12_000)
    signal = sum(sim.signal(c)[1] for c in COMPONENTS)
    expected = cavity_frequency(1, 0, 1) / math.sqrt(eps_r)
    found = peak_frequency(signal, sim.dt, 0.97 * expected, 1.03 * expected)
    assert abs(found - expected) / expected < 5e-3


def test_ports_and_pml_setups_are_checked():
    grid = YeeGrid.uniform(BOX, 0.05)
    pulse = GaussianPulse(1e-9)
    with pytest.raises(ValueError, match="port p: the resistance must be a positive number"):
        LumpedPort("p", "ez", (0.5, 0.3, 0.2), (0.5, 0.3, 0.4), resistance=0.0)
    with pytest.raises(ValueError, match="port p lies outside the grid"):
        Simulation(grid, ports=[LumpedPort("p", "ez", (2, 0.3, 0.2), (2, 0.3, 0.4),
                                           waveform=pulse)])
    with pytest.raises(ValueError, match="port p spans no ez edge"):
        Simulation(grid, ports=[LumpedPort("p", "ez", (0.5, 0.3, 0.31), (0.5, 0.3, 0.32),
                                           waveform=pulse)])
    with pytest.raises(ValueError, match="at least one source"):
        Simulation(grid, ports=[LumpedPort("p", "ez", (0.5, 0.3, 0.2), (0.5, 0.3, 0.4))])
    with pytest.raises(ValueError, match="lies in the PML along x"):
        Simulation(grid, sources=[EdgeSource("ez", (0.1, 0.3, 0.4), pulse)],
                   walls={"x-": "pml"})
    with pytest.raises(ValueError, match="a PML of 30 cells does not fit in 16 cells along z"):
        Simulation(grid, sources=[EdgeSource("ez", (0.5, 0.3, 0.4), pulse)],
                   walls={"z+": "pml"}, pml_cells=30)


def test_a_plane_wave_fills_its_box_and_nothing_leaks_out():
    """TF/SF in a 40 x 40 x 60 box of 5 mm cells with the CPML on every face: inside the
    total-field box ex is the incident wave (1 V/m, as the 1-D line has it, to 1e-5); outside
    it, on every side, less than -80 dB of it."""
    d = 0.005
    grid = YeeGrid.uniform((40 * d, 40 * d, 60 * d), d)
    wave = PlaneWave((12 * d, 12 * d, 14 * d), (28 * d, 28 * d, 46 * d),
                     ModulatedGaussian(2e9, 2e9))
    outside = {"above": ("ex", (20.5, 20, 50)), "below": ("ex", (20.5, 20, 10)),
               "beside in y": ("ex", (20.5, 31, 30)), "beside in x": ("ez", (31, 20, 30.5))}
    probes = [Probe("inside", "ex", (20.5 * d, 20 * d, 30 * d))] + [
        Probe(name, c, tuple(v * d for v in at)) for name, (c, at) in outside.items()]
    sim = Simulation(grid, plane_waves=[wave], probes=probes,
                     walls={face: "pml" for face in ("x-", "x+", "y-", "y+", "z-", "z+")})
    incident = []
    for _ in range(round(4e-9 / sim.dt)):
        incident.append(float(sim.boxes[0].line.e_between(30, 30)[0]))
        sim.run(1)
    inside = sim.signal("inside")[1]
    assert np.abs(inside).max() == pytest.approx(1.0, abs=0.01)
    assert np.abs(inside - np.array(incident)).max() < 1e-5
    for name in outside:
        leak = np.abs(sim.signal(name)[1]).max() / np.abs(inside).max()
        assert leak < 1e-4, (name, leak)


def test_a_plane_wave_box_needs_room_in_the_grid():
    grid = YeeGrid.uniform(BOX, 0.05)
    with pytest.raises(ValueError, match="must lie inside the grid with a cell around it"):
        Simulation(grid, plane_waves=[PlaneWave((0, 0.1, 0.1), (0.5, 0.5, 0.5),
                                                GaussianPulse(1e-9))])


def test_temporal_blocks_equal_step_by_step_bit_for_bit():
    """kernels.leap: 12 steps as wavefronts of 2 to 6 steps over 1 to 5 tiles of x planes
    (tiles on one anti-diagonal in parallel) against step by step, H then E over all planes,
    from the same random fields, with materials, the CPML on every face, a source, a port,
    a probe and a DFT plane: every field, every psi and every value the monitors read
    identical."""
    from twinstack.sim.fit_td import kernels

    grid = YeeGrid.uniform((0.3, 0.2, 0.25), 0.01)
    cells = np.zeros(grid.shape, np.uint8)
    cells[8:20, 5:15, 6:18] = 1
    faces = {face: "pml" for face in ("x-", "x+", "y-", "y+", "z-", "z+")}
    steps, planes = 12, grid.shape[0] + 1

    def blocked(levels: int, tiles: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        rng = np.random.default_rng(5)  # the same start for every schedule
        sim = Simulation(grid, sources=[EdgeSource("ez", (0.15, 0.1, 0.12), GaussianPulse(1e-9))],
                         ports=[LumpedPort("p", "ey", (0.1, 0.08, 0.1), (0.11, 0.12, 0.1), 50.0,
                                           GaussianPulse(1e-9))],
                         probes=[Probe("a", "ex", (0.2, 0.1, 0.1))],
                         monitors=[FieldDFT("d", "ez", "y", 0.1, frequencies=(1e9,))],
                         materials=[Material(), Material(4.4, 0.02)], cells=cells, walls=faces)
        for array in (*sim.e.values(), *sim.h.values(), *(t[3] for t in sim.terms)):
            array[...] = rng.standard_normal(array.shape)
        rows, scales = sim.sources.arrays()
        waves = sim.sources.values(0, steps, sim.dt)
        tapped = np.empty((steps, sim.taps.columns), np.float32)
        starts = np.linspace(0, planes, tiles + 1).astype(np.int64)
        assert np.diff(starts).min() >= levels + 2
        if levels:
            kernels.leap(*sim.arguments(), starts, levels, steps // levels, kernels.BOTH, rows,
                         scales, waves, sim.taps.array(), tapped)
        for s in range(0 if levels else steps):
            for half in (kernels.H_ONLY, kernels.E_ONLY):
                kernels.leap(*sim.arguments(), np.array([0, planes]), 1, 1, half, rows, scales,
                             np.ascontiguousarray(waves[:, s:s + 1]), sim.taps.array(),
                             tapped[s:s + 1])
        return sim.state(), tapped

    reference, read = blocked(0, 1)
    for levels, tiles in ((1, 1), (2, 3), (3, 5), (4, 1), (4, 5), (6, 3)):
        state, tapped = blocked(levels, tiles)
        assert np.array_equal(tapped, read), (levels, tiles)
        for name, array in state.items():
            assert np.array_equal(array, reference[name]), (levels, tiles, name)


def test_a_run_in_blocks_equals_a_run_step_by_step():
    """Simulation.run: blocks of 4 steps and a remainder give the probe, port and DFT results
    of a run one step at a time, bit for bit."""
    grid = YeeGrid.uniform((0.3, 0.2, 0.25), 0.01)
    results = []
    for levels in (1, LEVELS):
        sim = Simulation(grid, ports=[LumpedPort("p", "ez", (0.1, 0.1, 0.1), (0.1, 0.1, 0.13),
                                                 50.0, GaussianPulse(2e-10))],
                         probes=[Probe("a", "ez", (0.2, 0.12, 0.12))],
                         monitors=[FieldDFT("d", "ez", "z", 0.12, frequencies=(1e9, 2e9))],
                         walls={"x+": "pml", "y-": "pmc"})
        sim.levels = levels
        sim.run(103)
        results.append((sim.signal("a")[1], *sim.port_signals("p"),
                        sim.monitors["d"].phasors))  # type: ignore[attr-defined]
    for one, blocked in zip(*results, strict=True):
        assert np.array_equal(one, blocked)



def test_the_gpu_kernels_give_the_cpu_kernels_fields():
    """gpu.py's kernels on numba's CUDA simulator (no GPU here; where there is one, `auto`
    takes it) against the CPU's from the same random fields: every field, psi, probe, port
    and DFT value within float32 rounding (1e-6 of its largest), so every term of the update
    and the CPML is there and in the right place. A simulation too big for the GPU's free
    memory stays on the CPU under `auto`, and `gpu` says what it needs."""
    check = Path(__file__).with_name("fit_td_gpu_check.py")
    done = subprocess.run([sys.executable, str(check)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"})
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    differences = found["differences"]
    assert {"ex", "hz", "psi0", "psi11", "probe:a", "port:p:v", "monitor:d:phasors"} <= \
        set(differences)
    assert max(differences.values()) < 1e-6, differences
    assert found["too_small"]["auto_on_gpu"] is False  # a GPU too small: the CPU runs it
    assert re.fullmatch(r"backend gpu: the simulation needs 0\.03 MB, the GPU has 0\.02 MB free",
                        found["too_small"]["refused"]), found["too_small"]
