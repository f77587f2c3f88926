"""Meshing kernels, timed directly against their peers in the same run.

Run from the repository root:

    .venv/bin/python benchmarks/meshing.py --repeats 7 > meshing.json   # --only voxel|tet

* voxel: the union of two unit spheres, centres 1 apart, as one closed mesh (two icospheres of
  81,920 triangles each, united by manifold3d: about 124k triangles), on the grid of its
  bounding box with 200 cells per axis (dx 0.015, dy = dz 0.01):
  - ours: `twinstack.sim.voxel.voxelize` with 4 x 4 rays per cell column
    (`ours_4x4`), its default 2 x 2 (`ours_2x2`) and one ray per column (`ours_1x1`, the peers' one
    sample per cell);
    volume from the fill, and the staircase's (cells at least half inside) too;
  - pyvista: `PolyData.voxelize_binary_mask` (vtkPolyDataToImageStencil) with a reference
    image whose points are the same cell centres; volume = inside points x cell volume;
  - trimesh: `mesh.voxelized(pitch).fill()`; trimesh takes one pitch, so its mesh is scaled
    by 2/3 along x and voxelized at pitch 0.01: 200^3 cells of the same shape (its grid is
    aligned to multiples of the pitch, not to the box: shifted by under a cell).
  Each repeat runs the three in turn (interleaved), after one untimed call of each. Errors are
  relative to the exact volume of the polyhedron; `ratio` is peer median / ours (> 1: ours is
  faster).
  Timed for ours: voxelize + the fill's volume (the staircase count is outside the timing).

* tet (`meshing_tet.tet_benchmark`, gmsh from the `bench` extra): the 2 x 2 x 2 box with a
  ball of radius 0.5 cut out, meshed by netgen (ours) and by gmsh at an equal tet count;
  repeats // 2 rounds (each mesh takes seconds).

Times in milliseconds (median, p95, min, max). JSON to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from benchmarks.timing import interleaved, machine
from twinstack.sim.meshbool import Mesh, mesh_boolean
from twinstack.sim.voxel import Body, Grid, voxelize

CELLS = 200


def two_sphere_union() -> Mesh:
    ico = trimesh.creation.icosphere(subdivisions=6, radius=1.0)
    a = Mesh.from_arrays(ico.vertices, ico.faces)
    b = Mesh.from_arrays(ico.vertices + np.array([1.0, 0.0, 0.0]), ico.faces)
    return mesh_boolean("union", a, b)


def voxel_benchmark(repeats: int) -> dict[str, Any]:
    import pyvista as pv

    union = two_sphere_union()
    exact = union.volume
    lo, hi = union.vertices.min(axis=0), union.vertices.max(axis=0)
    grid = Grid.uniform(lo, hi, CELLS)
    spacing = (hi - lo) / CELLS
    cell_volume = float(np.prod(spacing))
    body = Body(union.vertices, union.faces, 1)

    poly = pv.PolyData.from_regular_faces(union.vertices, union.faces)
    reference = pv.ImageData(dimensions=(CELLS,) * 3, spacing=tuple(spacing),
                             origin=tuple(lo + spacing / 2))  # points = cell centres
    squash = np.array([spacing[1] / spacing[0], 1.0, 1.0])  # x cells become dy long
    tri_mesh = trimesh.Trimesh(union.vertices * squash, union.faces, process=False)
    pitch = float(spacing[1])

    volumes: dict[str, float] = {}

    staircase: dict[str, float] = {}

    def ours(samples: int) -> Callable[[], None]:
        def run() -> None:
            vox = voxelize(grid, [body], samples=samples)
            volumes[f"ours_{samples}x{samples}"] = vox.volume()
            staircase[f"ours_{samples}x{samples}"] = float(
                np.count_nonzero(vox.material)) * cell_volume
        return run

    def pyvista() -> None:
        mask = poly.voxelize_binary_mask(reference_volume=reference)
        volumes["pyvista"] = float(np.count_nonzero(mask["mask"])) * cell_volume

    def trimesh_fill() -> None:
        filled = tri_mesh.voxelized(pitch).fill()
        volumes["trimesh"] = float(filled.filled_count) * pitch**3 / squash[0]

    runs: dict[str, Callable[[], None]] = {"ours_4x4": ours(4), "ours_2x2": ours(2),
                                           "ours_1x1": ours(1), "pyvista": pyvista,
                                           "trimesh": trimesh_fill}
    times = interleaved(runs, repeats)  # warmed: numba's cache loaded, VTK's pipeline built
    out: dict[str, Any] = {
        "mesh": {"triangles": len(union.faces), "exact_volume": exact,
                 "vs_analytic": exact / (8 / 3 * np.pi - 5 * np.pi / 12) - 1},
        "grid": {"cells": list(grid.shape), "spacing": spacing.tolist()},
    }
    for name in runs:
        out[name] = times[name] | {"volume_rel_error": volumes[name] / exact - 1}
    for name, volume in staircase.items():
        out[name]["staircase_volume_rel_error"] = volume / exact - 1
    out["pyvista"]["version"] = pv.__version__
    out["trimesh"]["version"] = trimesh.__version__
    for ours_name in staircase:
        for peer in ("pyvista", "trimesh"):
            out[f"ratio_{peer}_to_{ours_name}"] = round(
                out[peer]["median_ms"] / out[ours_name]["median_ms"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", choices=("voxel", "tet"), help="one of the two parts")
    args = parser.parse_args()
    print(f"timing {args.repeats} repeats ...", file=sys.stderr)
    import numba

    result: dict[str, Any] = {"repeats": args.repeats, "machine": machine(
        numpy=np.__version__, numba=numba.__version__, netgen=version("netgen-mesher"))}
    if args.only in (None, "voxel"):
        result["voxel"] = voxel_benchmark(args.repeats)
    if args.only in (None, "tet"):
        from benchmarks.meshing_tet import tet_benchmark  # gmsh: only when asked for

        result["tet_box_with_hole"] = tet_benchmark(max(1, args.repeats // 2))
    result["machine"]["loadavg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
