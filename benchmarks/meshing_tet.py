"""Tetrahedral meshing of the box with a spherical hole: netgen through
`twinstack.sim.tetmesh.mesh_solids` against gmsh, at equal element counts.

Run as part of `benchmarks/meshing.py` (gmsh is in the `bench` extra):

    .venv/bin/python benchmarks/meshing.py --only tet --repeats 10 > meshing_tet.json

The solid (a 2x2x2 box minus a ball of radius 0.5 at its centre) is built by OCP in a
subprocess and written as a B-rep file, as the modelling service stores it; both meshers read
that file (OCP and netgen.occ cannot share a process; gmsh carries its own OpenCascade). For
each size, ours is netgen at `maxh` with 4 elements per radius of curvature (and, beside it,
the same with one optimisation round instead of netgen's three); gmsh gets a
comparable curvature rule (25 elements per 2 pi) and its `Mesh.MeshSizeMax` is tuned until
its tet count is within 5 % of ours. Both are single-threaded. Times cover reading the B-rep
to having the tets in numpy arrays, in milliseconds (median, p95, min, max), the two meshers
alternating in one loop. Volumes are compared with 8 - pi/6; dihedral angles and radius
ratios (3 r_in / R_circ) are computed the same way for both. JSON to stdout.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import gmsh
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from benchmarks.timing import interleaved
from twinstack.sim.tetmesh import Region, dihedral_angles, mesh_solids, radius_ratios

EXACT = 8 - 4 / 3 * math.pi * 0.5**3
SIZES = (0.2, 0.12)
CURVATURE_SAFETY = 4.0  # netgen: elements per radius of curvature
GMSH_CURVATURE = 25  # gmsh: elements per 2 pi of curvature, about the same rule
WRITE_BREP = (
    "import sys; from twinstack.sim import cad\n"
    "box = cad.build('box', {'size': [2, 2, 2]}, [])\n"
    "ball = cad.build('sphere', {'radius': 0.5, 'center': [1, 1, 1]}, [])\n"
    "open(sys.argv[1], 'wb').write(cad.build('difference', {}, [box, ball]).to_brep())\n"
)


def netgen_mesh(brep: bytes, maxh: float, optimize_steps: int = 3
                ) -> tuple[np.ndarray, np.ndarray]:
    mesh = mesh_solids([Region("part", brep)], maxh, curvature_safety=CURVATURE_SAFETY,
                       optimize_steps=optimize_steps)
    return mesh.points, mesh.tets


def gmsh_mesh(path: str, size: float) -> tuple[np.ndarray, np.ndarray]:
    gmsh.clear()
    gmsh.model.occ.importShapes(path)
    gmsh.model.occ.synchronize()
    gmsh.option.setNumber("Mesh.MeshSizeMax", size)
    gmsh.option.setNumber("Mesh.MeshSizeFromCurvature", GMSH_CURVATURE)
    gmsh.model.mesh.generate(3)
    tags, coords, _ = gmsh.model.mesh.getNodes()
    points = np.zeros((int(tags.max()) + 1, 3))
    points[tags.astype(np.int64)] = coords.reshape(-1, 3)
    _, nodes = gmsh.model.mesh.getElementsByType(4)  # 4-node tetrahedra
    return points, nodes.reshape(-1, 4).astype(np.int64)


def gmsh_size_for(path: str, tets: int) -> tuple[float, int]:
    """gmsh's MeshSizeMax giving `tets` tets within 5 %: count ~ size^-3, a few secant steps."""
    size, count = 0.2, 0
    for _ in range(12):
        count = len(gmsh_mesh(path, size)[1])
        if abs(count / tets - 1) <= 0.05:
            break
        size *= (count / tets) ** (1 / 3) * (1 + 0.02 * np.sign(count - tets))
    return size, count


def figures(points: np.ndarray, tets: np.ndarray) -> dict[str, Any]:
    p = points[tets]
    volumes = np.einsum("ij,ij->i", p[:, 1] - p[:, 0],
                        np.cross(p[:, 2] - p[:, 0], p[:, 3] - p[:, 0])) / 6
    angles = dihedral_angles(points, tets)
    ratio = radius_ratios(points, tets)
    return {"tets": len(tets), "points": len(np.unique(tets)),
            "inverted": int(np.sum(volumes <= 0)),
            "volume_rel_error": float(np.abs(volumes).sum() / EXACT - 1),
            "min_dihedral_deg": round(float(angles.min()), 2),
            "max_dihedral_deg": round(float(angles.max()), 2),
            "radius_ratio_min": round(float(ratio.min()), 4),
            "radius_ratio_mean": round(float(ratio.mean()), 4)}


def tet_benchmark(repeats: int) -> dict[str, Any]:
    gmsh.initialize()
    gmsh.option.setNumber("General.Terminal", 0)
    gmsh.option.setNumber("General.NumThreads", 1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "holed.brep")
            subprocess.run([sys.executable, "-c", WRITE_BREP, path], check=True)
            brep = Path(path).read_bytes()
            out: dict[str, Any] = {}
            for maxh in SIZES:
                ours = figures(*netgen_mesh(brep, maxh))
                size, _ = gmsh_size_for(path, ours["tets"])
                theirs = figures(*gmsh_mesh(path, size))
                quick = figures(*netgen_mesh(brep, maxh, 1))
                times = interleaved({"netgen": lambda h=maxh: netgen_mesh(brep, h),
                                     "gmsh": lambda s=size: gmsh_mesh(path, s),
                                     "netgen_1": lambda h=maxh: netgen_mesh(brep, h, 1)},
                                    repeats)
                out[f"maxh_{maxh}"] = {
                    "netgen": {"maxh": maxh, "curvature_safety": CURVATURE_SAFETY,
                               **ours, **times["netgen"]},
                    "gmsh": {"mesh_size_max": round(size, 4),
                             "mesh_size_from_curvature": GMSH_CURVATURE,
                             **theirs, **times["gmsh"]},
                    # netgen with one optimisation round instead of three (more tets)
                    "netgen_optimize_steps_1": {**quick, **times["netgen_1"]},
                    "tet_count_ratio": round(theirs["tets"] / ours["tets"], 3),
                    "time_ratio_netgen_over_gmsh": round(
                        times["netgen"]["median_ms"] / times["gmsh"]["median_ms"], 2),
                }
            return out
    finally:
        gmsh.finalize()
