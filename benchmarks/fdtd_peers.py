"""The FDTD peers (openEMS, gprMax) on the problems `fit_td.py` times our solver on, so the three
rates come from one machine in one run. Install the peers first: `scripts/benchmark-peers.sh`.

Each peer runs in a subprocess (openEMS: Debian's `openEMS` binary on an XML written here;
gprMax: `.venv-peers/bin/python -m gprMax` on an input file written here) in a temporary
directory deleted after. What is timed is the peer's own time-stepping loop, as it prints it, so
parsing, operator/material setup, start-up and output writing are left out:
- openEMS: "Time for N iterations with C cells : T sec" (a timer around its engine loop).
- gprMax: "Time taken: T" (`solver.solvetime`, a timer around its iteration loop).

The problem (both peers): size^3 cells of 5 mm, float32, the time step at the 3D CFL limit
(dx / (c sqrt 3) = 9.629e-12 s, each peer's default), `steps` steps, one z-directed soft
Gaussian source (1 GHz) on the Ez edge at the centre. Cases:
- "vacuum": PEC on all six faces (openEMS: PEC; gprMax: `#pml_cells: 0`, which leaves its
  outer E untouched, i.e. PEC; its default would be a 10-cell PML).
- "materials_cpml": 8 absorbing cells on each face (openEMS: PML_8, which is a UPML; gprMax:
  `#pml_cells: 8`, its default HORIPML, a CPML), vacuum background and three blocks (eps_r 2.2;
  4.4 with 0.01 S/m; 10 with 0.1 S/m), each a third of the interior in x, the middle half in y,
  the interior in z: every z-line is one material, so the runs are long.
`cells` is size^3 for both; openEMS itself counts its (size+1)^3 mesh lines (`peer_cells`).
`wall_seconds` is the whole subprocess; `others_cpu_seconds` the CPU other processes took
meanwhile: well above 0, the rate is not to be trusted (this machine has 2 cores).
Run: `.venv/bin/python benchmarks/fdtd_peers.py [--sizes 100 200] [--steps 100] [--threads 2]`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEERS_PYTHON = Path(__file__).resolve().parent.parent / ".venv-peers" / "bin" / "python"
DX = 5e-3  # m
PML_CELLS = 8
F_SOURCE = 1e9  # Hz
BLOCKS = ((2.2, 0.0), (4.4, 0.01), (10.0, 0.1))  # (eps_r, sigma S/m), in x order
CASES = ("vacuum", "materials_cpml")

Box = tuple[tuple[int, int, int], tuple[int, int, int]]
Result = dict[str, float | int | str]


def dielectric_blocks(size: int) -> list[tuple[float, float, Box]]:
    """The three dielectric blocks as (eps_r, sigma, cell-index box), clear of the PML."""
    lo, hi = PML_CELLS, size - PML_CELLS
    xs = [lo + (hi - lo) * i // 3 for i in range(4)]
    return [(eps, sigma, ((xs[i], size // 4, lo), (xs[i + 1], 3 * size // 4, hi)))
            for i, (eps, sigma) in enumerate(BLOCKS)]


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user, nice, system) of the whole machine and of this one's ended children."""
    ticks = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:4]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(map(int, ticks)) / os.sysconf("SC_CLK_TCK"), children.ru_utime + children.ru_stime


def _run(command: list[str], directory: str,
         env: dict[str, str] | None = None) -> tuple[str, float, float]:
    """Runs the peer: its output (stdout and stderr), the wall-clock seconds and the CPU seconds
    other processes took meanwhile (a busy machine ruins the rates: gprMax binds and spin-waits
    its OpenMP threads, so one stolen core stalls every step)."""
    started, (machine, own) = time.perf_counter(), _cpu_seconds()
    done = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    machine_after, own_after = _cpu_seconds()
    others = (machine_after - machine) - (own_after - own)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {done.returncode}:\n{output[-3000:]}")
    return output, wall, max(others, 0.0)


def _result(size: int, steps: int, seconds: float, version: str, threads: int,
            run: tuple[str, float, float], peer_cells: int) -> Result:
    if seconds <= 0:
        raise ValueError(f"{version}: the time-stepping took too little to time; more steps")
    return {"cell_updates_per_s": size**3 * steps / seconds, "cells": size**3, "steps": steps,
            "seconds": seconds, "version": version, "threads": threads,
            "wall_seconds": round(run[1], 2), "others_cpu_seconds": round(run[2], 2),
            "peer_cells": peer_cells}


def _openems_xml(size: int, steps: int, case: str) -> str:
    boundary = "PEC" if case == "vacuum" else f"PML_{PML_CELLS}"
    lines = ",".join(str(i) for i in range(size + 1))
    c = size // 2
    materials = "" if case == "vacuum" else "".join(
        f'<Material ID="{n + 1}" Name="m{n}"><Property Epsilon="{eps}" Kappa="{sigma}"/>'
        f'<Primitives><Box Priority="10"><P1 X="{a[0]}" Y="{a[1]}" Z="{a[2]}"/>'
        f'<P2 X="{b[0]}" Y="{b[1]}" Z="{b[2]}"/></Box></Primitives></Material>'
        for n, (eps, sigma, (a, b)) in enumerate(dielectric_blocks(size)))
    faces = " ".join(f'{f}="{boundary}"' for f in ("xmin", "xmax", "ymin", "ymax", "zmin", "zmax"))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<openEMS>
  <FDTD NumberOfTimesteps="{steps}" endCriteria="1e-30" f_max="{F_SOURCE}">
    <Excitation Type="0" f0="0" fc="{F_SOURCE}"/>
    <BoundaryCond {faces}/>
  </FDTD>
  <ContinuousStructure CoordSystem="0">
    <RectilinearGrid DeltaUnit="{DX}" CoordSystem="0">
      <XLines>{lines}</XLines><YLines>{lines}</YLines><ZLines>{lines}</ZLines>
    </RectilinearGrid>
    <BackgroundMaterial Epsilon="1" Mue="1" Kappa="0" Sigma="0"/>
    <Properties>
      <Excitation ID="0" Name="source" Type="0" Excite="0,0,1"><Primitives><Box Priority="0">
        <P1 X="{c}" Y="{c}" Z="{c}"/><P2 X="{c}" Y="{c}" Z="{c + 1}"/></Box></Primitives>
      </Excitation>
      {materials}
    </Properties>
  </ContinuousStructure>
</openEMS>
"""


def openems_rate(size: int, steps: int, case: str = "vacuum", threads: int = 2) -> Result:
    """openEMS's cell-updates/s over its engine loop (multithreaded engine, `threads` threads;
    end criteria -300 dB, i.e. off, as 0 would mean its default -60 dB: exactly `steps` run)."""
    assert case in CASES
    with tempfile.TemporaryDirectory(prefix="openems-") as directory:
        Path(directory, "run.xml").write_text(_openems_xml(size, steps, case))
        run = _run(["openEMS", "run.xml", "--engine=multithreaded", f"--numThreads={threads}",
                    "--disable-dumps"], directory)
    output = run[0]
    timed = re.search(r"Time for (\d+) iterations with \S+ cells : ([\d.eE+-]+) sec", output)
    version = re.search(r"version (v\S+)", output)
    if not timed or not version or int(timed[1]) != steps:
        raise RuntimeError(f"openEMS's timing not found (or not {steps} steps):\n{output}")
    debian = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "openems"],
                            capture_output=True, text=True).stdout
    return _result(size, steps, float(timed[2]), f"{version[1]} (Debian {debian})", threads,
                   run, (size + 1) ** 3)


def _gprmax_input(size: int, steps: int, case: str, threads: int) -> str:
    def at(*cells: float) -> str:
        return " ".join(f"{i * DX:.6g}" for i in cells)

    c = size // 2
    lines = [f"#domain: {at(size, size, size)}", f"#dx_dy_dz: {at(1, 1, 1)}",
             f"#time_window: {steps}", f"#num_threads: {threads}",
             f"#pml_cells: {0 if case == 'vacuum' else PML_CELLS}",
             f"#waveform: gaussian 1 {F_SOURCE:g} pulse",
             f"#hertzian_dipole: z {at(c, c, c)} pulse"]
    if case != "vacuum":
        for n, (eps, sigma, (a, b)) in enumerate(dielectric_blocks(size)):
            lines += [f"#material: {eps} {sigma} 1 0 m{n}", f"#box: {at(*a)} {at(*b)} m{n} n"]
    return "\n".join(lines) + "\n"


def _seconds(text: str) -> float:
    """humanize's "1 minute and 2.5000 seconds" as seconds."""
    scale = {"hour": 3600.0, "minute": 60.0, "second": 1.0}
    return sum(float(n) * scale[unit] for n, unit in
               re.findall(r"([\d.]+) (hour|minute|second)s?", text))


def gprmax_rate(size: int, steps: int, case: str = "vacuum", threads: int = 2) -> Result:
    """gprMax's cell-updates/s over its iteration loop (CPU/OpenMP solver, single precision,
    `threads` OpenMP threads: #num_threads and OMP_NUM_THREADS)."""
    assert case in CASES
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(prefix="gprmax-") as directory:
        Path(directory, "run.in").write_text(_gprmax_input(size, steps, case, threads))
        run = _run([str(PEERS_PYTHON), "-m", "gprMax", "run.in", "--hide-progress-bars",
                    "-cpu_precision", "single"], directory, env)
    output = run[0]
    timed = re.search(r"^Time taken: (.+)$", output, re.MULTILINE)
    cells = f"({size} x {size} x {size} = " in output
    version = re.search(r"^\s+v(\d\S*)", output, re.MULTILINE)
    used = re.search(r"using (\d+) thread", output)
    if not timed or not cells or not version or not used or int(used[1]) != threads:
        raise RuntimeError(f"gprMax's timing, grid, version or threads not found:\n{output}")
    return _result(size, steps, _seconds(timed[1]), version[1], threads, run, size**3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    results = {f"{peer.__name__.split('_')[0]}_{case}_{size}":
               peer(size, args.steps, case, args.threads)
               for size in args.sizes for case in CASES for peer in (openems_rate, gprmax_rate)}
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
