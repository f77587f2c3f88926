"""Modelling kernels, timed directly (no service): exact B-rep booleans on OpenCascade and
mesh booleans on manifold3d.

Run from the repository root:

    .venv/bin/python benchmarks/modeling.py --repeats 20 > modeling.json

* direct: `build(op)` of two spheres (radius 1, centres 1 apart) for union, difference and
  intersection, each timed together with the BREP serialization of its result (what a model
  service stores); and a STEP export + import round trip of the union. Volumes' relative
  errors against the closed forms are printed too.
* mesh: the same three booleans on two icospheres of 81,920 triangles each (subdivision 6),
  through `twinstack.sim.meshbool.mesh_boolean` (validation, exact vertex merge, manifold3d)
  and through `trimesh.boolean` with `engine="manifold"`, one after the other in the same run.

* box_torus_union: a box and a torus crossing its top face, united (~100 ms of kernel work),
  direct and through the platform like the others.
* service: the same booleans and the same STEP round trip through the platform, as a user
  makes them: `session.modeling.create(op, a, b)` from the Python client (relay, modeling
  service, which reads its inputs from the model service, builds, puts the BREP blob with
  fsync and commits one new state through the model service), and `export(..., "step")` then
  `import_file(...)`; `ratio` is service / direct, from the medians of the same run.

Times in milliseconds (median, p95, min, max). JSON to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' platform helpers

from benchmarks.timing import machine, milliseconds
from tests.platform_fixtures import running_platform
from twinstack.sim.cad import Solid, build
from twinstack.sim.meshbool import Mesh, mesh_boolean

OPS = ("union", "difference", "intersection")
# A boolean of more faces and curved intersections (~100 ms in the kernel): where the
# platform's fixed cost per change meets work of a size users wait for.
BOX = {"size": [2.0, 2.0, 2.0]}
TORUS = {"major_radius": 1.0, "minor_radius": 0.4, "center": [1.0, 1.0, 2.0]}
LENS = 5 * math.pi / 12  # two unit spheres, centres 1 apart
EXACT = {
    "union": 8 / 3 * math.pi - LENS,
    "difference": 4 / 3 * math.pi - LENS,
    "intersection": LENS,
}


def direct_timings(repeats: int) -> dict[str, Any]:
    """The exact kernel called in-process: booleans + BREP bytes, STEP round trip."""
    a = build("sphere", {"radius": 1.0}, [])
    b = build("sphere", {"radius": 1.0, "center": [1.0, 0.0, 0.0]}, [])
    out: dict[str, Any] = {}
    for op in OPS:
        out[f"{op}_brep"] = milliseconds(lambda op=op: build(op, {}, [a, b]).to_brep(), repeats)
        result = build(op, {}, [a, b])
        out[f"{op}_brep"]["brep_bytes"] = len(result.to_brep())
        out[f"{op}_brep"]["volume_rel_error"] = result.properties()["volume"] / EXACT[op] - 1
    box, torus = build("box", BOX, []), build("torus", TORUS, [])
    out["box_torus_union_brep"] = milliseconds(lambda: build("union", {}, [box, torus]).to_brep(),
                                        repeats)
    union = build("union", {}, [a, b])
    out["step_round_trip"] = milliseconds(lambda: Solid.from_step(union.to_step()), repeats)
    back = Solid.from_step(union.to_step())
    out["step_round_trip"]["step_bytes"] = len(union.to_step())
    out["step_round_trip"]["volume_rel_change"] = (
        back.properties()["volume"] / union.properties()["volume"] - 1
    )
    return out


def mesh_timings(repeats: int) -> dict[str, Any]:
    """manifold3d through our wrapper vs trimesh's boolean wrapper on the same two meshes."""
    sa = trimesh.creation.icosphere(subdivisions=6, radius=1.0)
    sb = sa.copy()
    sb.apply_translation([1.0, 0.0, 0.0])
    ma, mb = Mesh.from_arrays(sa.vertices, sa.faces), Mesh.from_arrays(sb.vertices, sb.faces)
    engines = {
        "union": trimesh.boolean.union,
        "difference": trimesh.boolean.difference,
        "intersection": trimesh.boolean.intersection,
    }
    out: dict[str, Any] = {"triangles_each": len(sa.faces)}
    for op in OPS:
        ours = mesh_boolean(op, ma, mb)
        theirs = engines[op]([sa, sb], engine="manifold")
        out[op] = {
            "twinstack": milliseconds(lambda op=op: mesh_boolean(op, ma, mb), repeats),
            "trimesh": milliseconds(lambda op=op: engines[op]([sa, sb], engine="manifold"),
                                    repeats),
            "triangles": len(ours.faces),
            "volume_twinstack": ours.volume,
            "volume_trimesh": float(theirs.volume),
            "volume_rel_error_vs_exact": ours.volume / EXACT[op] - 1,
        }
    return out


def service_timings(repeats: int) -> dict[str, Any]:
    """The same work through `twinstack up`, from the Python client."""
    with tempfile.TemporaryDirectory() as tmp, \
            running_platform(Path(tmp), "bench") as platform:
        tw = platform.client("bench")
        session = tw.open_session(tw.create_project("bench", "3D simulation")["id"])
        cad = session.modeling
        a = cad.create("sphere", radius=1.0, name="a")
        b = cad.create("sphere", radius=1.0, center=[1.0, 0.0, 0.0], name="b")
        out: dict[str, Any] = {}
        for op in OPS:
            out[f"{op}_brep"] = milliseconds(lambda op=op: cad.create(op, a, b, name=op), repeats)
        box, torus = cad.create("box", **BOX), cad.create("torus", **TORUS)
        out["box_torus_union_brep"] = milliseconds(lambda: cad.create("union", box, torus), repeats)
        union = cad.create("union", a, b, name="u")
        out["step_round_trip"] = milliseconds(
            lambda: cad.import_file("u.step", cad.export(union, "step"), "step"), repeats)
        session.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"timing {args.repeats} repeats ...", file=sys.stderr)
    result = {
        "repeats": args.repeats,
        "machine": machine(numpy=np.__version__, trimesh=trimesh.__version__),
        "direct": direct_timings(args.repeats),
        "service": service_timings(args.repeats),
        "mesh": mesh_timings(args.repeats),
    }
    result["service_over_direct"] = {
        name: round(result["service"][name]["median_ms"] / times["median_ms"], 2)
        for name, times in result["direct"].items()}
    result["machine"]["loadavg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
