"""Exact solid modelling (B-rep) on OpenCascade through `cadquery-ocp-novtk` (OCP).

Numerics only: a `Solid` wraps one OpenCascade shape (a solid or a compound of solids) and
`build(feature, parameters, inputs)` evaluates one modelling feature. Large results leave as
bytes (BREP, STEP, binary STL, GLB); the service stores them as blobs.

Why OCP and not `netgen.occ`: netgen-mesher 6.2.2608's bindings have no shape analyser
(BRepCheck), no tessellation with a chosen deflection (its `Triangulation()` binding cannot
return its result), and read/write B-rep and STEP only through files. OCP exposes all of
OpenCascade. The tetrahedral mesher can still take our B-rep bytes.

Import this module before `netgen.occ` in a process that uses both: both bind OpenCascade
types through pybind11, and whichever registers first wins (with netgen first, OCP's shape-type
enum reads wrongly and every solid looks empty). The guard below refuses the bad order.

Every bad input raises `GeometryError` with what is wrong and the limit. Everything is
deterministic: serial meshing, edge numbering from OpenCascade's indexed map of the shape.
"""

from __future__ import annotations

import io
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from OCP.APIHeaderSection import APIHeaderSection_MakeHeader
from OCP.Bnd import Bnd_Box
from OCP.BRep import BRep_Builder, BRep_Tool
from OCP.BRepAdaptor import BRepAdaptor_Curve
from OCP.BRepAlgoAPI import (
    BRepAlgoAPI_BooleanOperation,
    BRepAlgoAPI_Common,
    BRepAlgoAPI_Cut,
    BRepAlgoAPI_Fuse,
)
from OCP.BRepBndLib import BRepBndLib
from OCP.BRepBuilderAPI import (
    BRepBuilderAPI_MakeFace,
    BRepBuilderAPI_MakePolygon,
    BRepBuilderAPI_Transform,
)
from OCP.BRepCheck import BRepCheck_Analyzer
from OCP.BRepFilletAPI import BRepFilletAPI_MakeChamfer, BRepFilletAPI_MakeFillet
from OCP.BRepGProp import BRepGProp
from OCP.BRepMesh import BRepMesh_IncrementalMesh
from OCP.BRepPrimAPI import (
    BRepPrimAPI_MakeBox,
    BRepPrimAPI_MakeCone,
    BRepPrimAPI_MakeCylinder,
    BRepPrimAPI_MakePrism,
    BRepPrimAPI_MakeSphere,
    BRepPrimAPI_MakeTorus,
)
from OCP.BRepTools import BRepTools
from OCP.gp import gp_Ax1, gp_Ax2, gp_Dir, gp_Pnt, gp_Trsf, gp_Vec
from OCP.GProp import GProp_GProps
from OCP.IFSelect import IFSelect_RetDone
from OCP.Interface import Interface_Static
from OCP.Message import Message, Message_Gravity
from OCP.OCP.collections import IndexedMap_TopoDS_Shape_TopTools_ShapeMapHasher as _ShapeMap
from OCP.STEPControl import STEPControl_AsIs, STEPControl_Reader, STEPControl_Writer
from OCP.TCollection import TCollection_HAsciiString
from OCP.TopAbs import TopAbs_EDGE, TopAbs_FACE, TopAbs_REVERSED, TopAbs_SOLID
from OCP.TopExp import TopExp, TopExp_Explorer
from OCP.TopLoc import TopLoc_Location
from OCP.TopoDS import TopoDS, TopoDS_Shape

if "netgen.libngpy" in sys.modules:  # see the module docstring
    raise ImportError("import twinstack.sim.cad before netgen.occ (OpenCascade bindings clash)")

MAX_POLYGON_POINTS = 1000  # a prism's outline: checked and built in well under a second
MAX_TRIANGLES = 5_000_000  # default cap on a tessellation's triangles
MIN_RELATIVE_TOLERANCE = 1e-5  # a tessellation's tolerance must be >= this x the bbox diagonal
ANGULAR_DEFLECTION = 0.5  # radians; OpenCascade's default, bounds facets on small curved faces
GPROP_EPS = 1e-9  # adaptive integration's relative error goal (Gauss, per face)
_EPS = 1e-9  # relative: lengths, volumes and determinants below this x the scale count as zero

# OpenCascade prints STEP reader/writer chatter to stdout; a service's stdout is its log.
for _printer in Message.DefaultMessenger_s().Printers():
    _printer.SetTraceLevel(Message_Gravity.Message_Fail)


class GeometryError(ValueError):
    """A modelling request that cannot be satisfied: the message says what and the limit."""


# ---------------------------------------------------------------------------------------------
# the wrapped shape


class Solid:
    """One OpenCascade shape that holds at least one solid (a solid or a compound of solids)."""

    __slots__ = ("_box", "_mass", "shape")

    def __init__(self, shape: TopoDS_Shape) -> None:
        if shape is None or shape.IsNull():
            raise GeometryError("entity is not a solid: the shape is empty")
        if _count(shape, TopAbs_SOLID) == 0:
            raise GeometryError("entity is not a solid: it holds no closed volume")
        self.shape = shape
        self._mass: GProp_GProps | None = None
        self._box: list[list[float]] | None = None

    # --- serialization ---------------------------------------------------------------------

    def to_brep(self) -> bytes:
        """OpenCascade's own text format: exact, and what the tetrahedral mesher reads."""
        buf = io.BytesIO()
        BRepTools.Write_s(self.shape, buf)
        return buf.getvalue()

    @classmethod
    def from_brep(cls, data: bytes) -> Solid:
        if not data:
            raise GeometryError("the BREP data could not be read: it is empty")
        shape = TopoDS_Shape()
        try:
            BRepTools.Read_s(shape, io.BytesIO(data), BRep_Builder())
        except Exception as exc:  # OCP raises Standard_Failure subclasses
            raise GeometryError(f"the BREP data could not be read: {exc}") from exc
        if shape.IsNull():
            raise GeometryError("the BREP data could not be read: no shape in it")
        return _checked(shape, "the BREP data")

    def to_step(self) -> bytes:
        """AP214 STEP, the exchange format other CAD systems read."""
        writer = STEPControl_Writer()
        Interface_Static.SetCVal_s("write.step.schema", "AP214IS")
        if writer.Transfer(self.shape, STEPControl_AsIs) != IFSelect_RetDone:
            raise GeometryError("the shape could not be converted to STEP")
        # a fixed header: the same solid gives the same bytes (blobs are content-addressed)
        header = APIHeaderSection_MakeHeader(writer.Model())
        header.SetName(TCollection_HAsciiString("twinstack"))
        header.SetTimeStamp(TCollection_HAsciiString("1970-01-01T00:00:00"))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "shape.step")
            if writer.Write(path) != IFSelect_RetDone:
                raise GeometryError("the STEP file could not be written")
            with open(path, "rb") as f:
                return f.read()

    @classmethod
    def from_step(cls, data: bytes) -> Solid:
        if not data:
            raise GeometryError("the STEP data could not be read: it is empty")
        reader = STEPControl_Reader()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "shape.step")
            with open(path, "wb") as f:
                f.write(data)
            try:
                status = reader.ReadFile(path)
            except Exception as exc:
                raise GeometryError(f"the STEP data could not be read: {exc}") from exc
        if status != IFSelect_RetDone:
            raise GeometryError(f"the STEP data could not be read: reader status {status.name}")
        if reader.TransferRoots() == 0:
            raise GeometryError("the STEP data could not be read: it holds no shape")
        shape = reader.OneShape()
        if shape.IsNull():
            raise GeometryError("the STEP data could not be read: it holds no shape")
        return _checked(shape, "the STEP data")

    # --- queries -------------------------------------------------------------------------

    def _volume_properties(self) -> GProp_GProps:
        """Volume and centre of mass, integrated once (the check of a new solid needs them)."""
        if self._mass is None:
            self._mass = GProp_GProps()
            BRepGProp.VolumeProperties_s(self.shape, self._mass, GPROP_EPS)
        return self._mass

    def bbox(self) -> list[list[float]]:
        if self._box is None:
            self._box = _bbox(self.shape)
        return self._box

    def properties(self) -> dict[str, Any]:
        """Exact mass properties (OpenCascade integrates the B-rep surfaces), counts and bbox."""
        vol = self._volume_properties()
        surf = GProp_GProps()
        BRepGProp.SurfaceProperties_s(self.shape, surf, GPROP_EPS)
        com = vol.CentreOfMass()
        return {
            "volume": vol.Mass(),
            "area": surf.Mass(),
            "bbox": self.bbox(),
            "center_of_mass": [com.X(), com.Y(), com.Z()],
            "solids": _count(self.shape, TopAbs_SOLID),
            "faces": _unique(self.shape, TopAbs_FACE).Extent(),
            "edges": _unique(self.shape, TopAbs_EDGE).Extent(),
        }

    def edges(self) -> list[dict[str, Any]]:
        """Every distinct edge, numbered as `fillet`/`chamfer` take them, with its midpoint
        (at the middle of its parameter range) and length, so a user can pick edges."""
        out = []
        emap = _unique(self.shape, TopAbs_EDGE)
        for i in range(1, emap.Extent() + 1):
            edge = TopoDS.Edge(emap.FindKey(i))
            if BRep_Tool.Degenerated_s(edge):
                mid, length = None, 0.0
            else:
                curve = BRepAdaptor_Curve(edge)
                p = curve.Value(0.5 * (curve.FirstParameter() + curve.LastParameter()))
                mid = [p.X(), p.Y(), p.Z()]
                props = GProp_GProps()
                BRepGProp.LinearProperties_s(edge, props)
                length = props.Mass()
            out.append({"index": i - 1, "midpoint": mid, "length": length})
        return out

    def triangles(
        self, tolerance: float, max_triangles: int = MAX_TRIANGLES
    ) -> tuple[np.ndarray, np.ndarray]:
        """A watertight surface triangulation: (vertices (n, 3) float64, faces (m, 3) int64),
        outward-oriented, no point farther than `tolerance` (chord deviation) from the exact
        surface. Vertices shared by neighbouring faces are merged (they coincide exactly)."""
        diag = math.dist(*self.bbox())
        tol = _positive("tolerance", tolerance)
        if tol < diag * MIN_RELATIVE_TOLERANCE:
            raise GeometryError(
                f"tolerance must be >= {MIN_RELATIVE_TOLERANCE:g} x the bounding-box diagonal "
                f"({diag * MIN_RELATIVE_TOLERANCE:.6g}), got {tol:g}"
            )
        shape = BRepBuilderAPI_Transform(self.shape, gp_Trsf(), True).Shape()  # mesh a copy
        mesher = BRepMesh_IncrementalMesh(shape, tol, False, ANGULAR_DEFLECTION, False)
        mesher.Perform()
        points: list[np.ndarray] = []
        tris: list[np.ndarray] = []
        offset = 0
        total = 0
        explorer = TopExp_Explorer(shape, TopAbs_FACE)
        while explorer.More():
            face = TopoDS.Face(explorer.Current())
            explorer.Next()
            loc = TopLoc_Location()
            poly = BRep_Tool.Triangulation_s(face, loc)
            if poly is None:
                raise GeometryError("a face could not be triangulated")
            total += poly.NbTriangles()
            if total > max_triangles:
                raise GeometryError(
                    f"the triangulation exceeds {max_triangles} triangles; use a larger tolerance"
                )
            trsf = loc.Transformation()
            xyz = np.empty((poly.NbNodes(), 3))
            for k in range(poly.NbNodes()):
                p = poly.Node(k + 1).Transformed(trsf)
                xyz[k] = (p.X(), p.Y(), p.Z())
            ijk = np.empty((poly.NbTriangles(), 3), dtype=np.int64)
            for k in range(poly.NbTriangles()):
                ijk[k] = poly.Triangle(k + 1).Get()
            ijk -= 1
            if face.Orientation() == TopAbs_REVERSED:
                ijk = ijk[:, ::-1]
            points.append(xyz)
            tris.append(ijk + offset)
            offset += len(xyz)
        if not tris:
            raise GeometryError("the shape has no faces to triangulate")
        allpts = np.concatenate(points)
        unique, inverse = np.unique(allpts, axis=0, return_inverse=True)
        faces = inverse.reshape(-1)[np.concatenate(tris)]
        keep = (
            (faces[:, 0] != faces[:, 1])
            & (faces[:, 1] != faces[:, 2])
            & (faces[:, 0] != faces[:, 2])
        )
        return unique, np.ascontiguousarray(faces[keep], dtype=np.int64)

    def to_stl(self, tolerance: float) -> bytes:
        """Binary STL of `triangles(tolerance)`."""
        vertices, faces = self.triangles(tolerance)
        return stl_bytes(vertices, faces)

    def to_glb(
        self,
        tolerance: float,
        name: str = "solid",
        color: tuple[float, float, float] = (0.7, 0.7, 0.7),
    ) -> bytes:
        """Binary glTF (what browsers draw) of `triangles(tolerance)`: one mesh, a PBR colour."""
        rgb = _vec("color", list(color) if isinstance(color, tuple) else color)
        if not all(0 <= c <= 1 for c in rgb):
            raise GeometryError(f"color must be three numbers in [0, 1], got {color!r}")
        import trimesh  # only here: the GLB writer

        vertices, faces = self.triangles(tolerance)
        material = trimesh.visual.material.PBRMaterial(
            name=name,
            baseColorFactor=[*rgb, 1.0],
            metallicFactor=0.0,
            roughnessFactor=0.8,
        )
        mesh = trimesh.Trimesh(
            vertices=vertices,
            faces=faces,
            process=False,
            visual=trimesh.visual.TextureVisuals(material=material),
        )
        scene = trimesh.Scene()
        scene.add_geometry(mesh, node_name=name, geom_name=name)
        data = scene.export(file_type="glb")
        assert isinstance(data, bytes)
        return data


def stl_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """Binary STL: 80-byte header, triangle count, then normal + 3 vertices + 2 bytes each."""
    tri = vertices[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, norm, out=np.zeros_like(normals), where=norm > 0)
    record = np.zeros(
        len(faces), dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    )
    record["n"] = normals
    record["v"] = tri
    header = b"TwinStack binary STL".ljust(80, b" ")
    return header + np.uint32(len(faces)).tobytes() + record.tobytes()


# ---------------------------------------------------------------------------------------------
# features


@dataclass(frozen=True)
class Feature:
    """One modelling operation: how many input solids it takes, its parameters with defaults
    (`REQUIRED` for none) and a one-line description template for commit messages."""

    name: str
    inputs: int
    parameters: dict[str, Any]
    description: str
    run: Callable[[dict[str, Any], list[Solid]], TopoDS_Shape] = field(repr=False, compare=False)

    def describe(self, parameters: dict[str, Any], input_names: Sequence[str] = ()) -> str:
        """The description with parameters (and input names as {a}, {b}) filled in."""
        names = dict(zip("ab", input_names, strict=False))
        return self.description.format(**{**self.parameters, **parameters, **names})


REQUIRED: Any = None  # marks a parameter without a default
_ORIGIN = [0.0, 0.0, 0.0]
_Z = [0.0, 0.0, 1.0]


def _vec(name: str, value: Any, n: int = 3) -> list[float]:
    if not isinstance(value, list | tuple) or len(value) != n:
        raise GeometryError(f"{name} must be a list of {n} numbers, got {value!r}")
    return [_number(f"{name}[{i}]", v) for i, v in enumerate(value)]


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise GeometryError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _positive(name: str, value: Any) -> float:
    x = _number(name, value)
    if x <= 0:
        raise GeometryError(f"{name} must be > 0, got {value!r}")
    return x


def _direction(name: str, value: Any) -> gp_Dir:
    v = _vec(name, value)
    norm = math.sqrt(sum(c * c for c in v))
    if norm < 1e-12:
        raise GeometryError(f"{name} must be a non-zero vector, got {value!r}")
    return gp_Dir(v[0] / norm, v[1] / norm, v[2] / norm)


def _axes(base: Any, axis: Any, base_name: str = "base", axis_name: str = "axis") -> gp_Ax2:
    return gp_Ax2(gp_Pnt(*_vec(base_name, base)), _direction(axis_name, axis))


def _box(p: dict[str, Any], _: list[Solid]) -> TopoDS_Shape:
    size = [_positive(f"size[{i}]", v) for i, v in enumerate(_vec("size", p["size"]))]
    corner = _vec("corner", p["corner"])
    far = [c + s for c, s in zip(corner, size, strict=True)]
    return BRepPrimAPI_MakeBox(gp_Pnt(*corner), gp_Pnt(*far)).Shape()


def _sphere(p: dict[str, Any], _: list[Solid]) -> TopoDS_Shape:
    return BRepPrimAPI_MakeSphere(
        gp_Pnt(*_vec("center", p["center"])), _positive("radius", p["radius"])
    ).Shape()


def _cylinder(p: dict[str, Any], _: list[Solid]) -> TopoDS_Shape:
    r, h = _positive("radius", p["radius"]), _positive("height", p["height"])
    return BRepPrimAPI_MakeCylinder(_axes(p["base"], p["axis"]), r, h).Shape()


def _cone(p: dict[str, Any], _: list[Solid]) -> TopoDS_Shape:
    r1, r2 = _number("radius1", p["radius1"]), _number("radius2", p["radius2"])
    if r1 < 0 or r2 < 0 or r1 == r2 == 0:
        raise GeometryError(f"radius1 and radius2 must be >= 0 and not both 0, got {r1}, {r2}")
    if r1 == r2:
        raise GeometryError(
            f"radius1 and radius2 must differ (equal radii: use cylinder), got {r1}"
        )
    return BRepPrimAPI_MakeCone(
        _axes(p["base"], p["axis"]), r1, r2, _positive("height", p["height"])
    ).Shape()


def _torus(p: dict[str, Any], _: list[Solid]) -> TopoDS_Shape:
    big, small = (
        _positive("major_radius", p["major_radius"]),
        _positive("minor_radius", p["minor_radius"]),
    )
    if small >= big:
        raise GeometryError(f"minor_radius must be < major_radius ({big}), got {small}")
    return BRepPrimAPI_MakeTorus(_axes(p["center"], p["axis"], "center"), big, small).Shape()


def _prism(p: dict[str, Any], _: list[Solid]) -> TopoDS_Shape:
    raw = p["polygon"]
    if not isinstance(raw, list | tuple) or len(raw) < 3:
        raise GeometryError(f"polygon must be a list of >= 3 [x, y] points, got {raw!r:.80}")
    if len(raw) > MAX_POLYGON_POINTS:  # the simplicity check compares every pair of edges
        raise GeometryError(f"polygon has {len(raw):,} points, more than the limit "
                            f"{MAX_POLYGON_POINTS:,}; import a STEP file for such outlines")
    pts = np.array([_vec(f"polygon[{i}]", q, 2) for i, q in enumerate(raw)])
    if np.array_equal(pts[0], pts[-1]):
        pts = pts[:-1]  # a closing repeat of the first point
    _check_simple_polygon(pts)
    height = _positive("height", p["height"])
    poly = BRepBuilderAPI_MakePolygon()
    for x, y in pts:
        poly.Add(gp_Pnt(float(x), float(y), 0.0))
    poly.Close()
    face = BRepBuilderAPI_MakeFace(poly.Wire(), True)
    if not face.IsDone():
        raise GeometryError("polygon does not make a plane face")
    return BRepPrimAPI_MakePrism(face.Face(), gp_Vec(0.0, 0.0, height)).Shape()


def _check_simple_polygon(pts: np.ndarray) -> None:
    """>= 3 distinct points, non-zero area, no two non-adjacent edges touching."""
    n = len(pts)
    if n < 3:
        raise GeometryError(f"polygon must have >= 3 distinct points, got {n}")
    scale = float(np.ptp(pts, axis=0).max())
    edges = np.roll(pts, -1, axis=0) - pts
    if np.any(np.linalg.norm(edges, axis=1) <= _EPS * scale):
        raise GeometryError("polygon has repeated consecutive points")
    area = 0.5 * float(
        np.sum(pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1])
    )
    if abs(area) <= _EPS * scale * scale:
        raise GeometryError(f"polygon must enclose a non-zero area, got {area:g}")

    def cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) \
            - (a[..., 1] - o[..., 1]) * (b[..., 0] - o[..., 0])

    def on(o: np.ndarray, a: np.ndarray, q: np.ndarray) -> np.ndarray:
        lo, hi = np.minimum(o, a), np.maximum(o, a)
        return np.all((lo <= q) & (q <= hi), axis=-1)

    starts, ends = pts, np.roll(pts, -1, axis=0)
    for i in range(n - 2):  # edge i against every later edge j that is not next to it
        j = np.arange(i + 2, n if i > 0 else n - 1)
        a, b, c, d = starts[i], ends[i], starts[j], ends[j]
        d1, d2, d3, d4 = cross(c, d, a), cross(c, d, b), cross(a, b, c), cross(a, b, d)
        crosses = ((d1 > 0) != (d2 > 0)) & ((d3 > 0) != (d4 > 0)) \
            & (d1 != 0) & (d2 != 0) & (d3 != 0) & (d4 != 0)
        touches = ((d1 == 0) & on(c, d, a)) | ((d2 == 0) & on(c, d, b)) \
            | ((d3 == 0) & on(a, b, c)) | ((d4 == 0) & on(a, b, d))
        hit = np.flatnonzero(crosses | touches)
        if hit.size:
            raise GeometryError(f"polygon must be simple: edges {i} and {j[hit[0]]} intersect")


def _transformed(solid: Solid, trsf: gp_Trsf) -> TopoDS_Shape:
    return BRepBuilderAPI_Transform(solid.shape, trsf, True).Shape()


def _translate(p: dict[str, Any], inputs: list[Solid]) -> TopoDS_Shape:
    trsf = gp_Trsf()
    trsf.SetTranslation(gp_Vec(*_vec("vector", p["vector"])))
    return _transformed(inputs[0], trsf)


def _rotate(p: dict[str, Any], inputs: list[Solid]) -> TopoDS_Shape:
    trsf = gp_Trsf()
    axis = gp_Ax1(
        gp_Pnt(*_vec("axis_point", p["axis_point"])),
        _direction("axis_direction", p["axis_direction"]),
    )
    trsf.SetRotation(axis, math.radians(_number("angle_degrees", p["angle_degrees"])))
    return _transformed(inputs[0], trsf)


def _scale(p: dict[str, Any], inputs: list[Solid]) -> TopoDS_Shape:
    trsf = gp_Trsf()
    trsf.SetScale(gp_Pnt(*_vec("center", p["center"])), _positive("factor", p["factor"]))
    return _transformed(inputs[0], trsf)


def _mirror(p: dict[str, Any], inputs: list[Solid]) -> TopoDS_Shape:
    trsf = gp_Trsf()
    trsf.SetMirror(_axes(p["plane_point"], p["plane_normal"], "plane_point", "plane_normal"))
    return _transformed(inputs[0], trsf)


def _boolean(maker: type[BRepAlgoAPI_BooleanOperation], word: str) -> Callable[..., TopoDS_Shape]:
    def run(_: dict[str, Any], inputs: list[Solid]) -> TopoDS_Shape:
        op = maker(inputs[0].shape, inputs[1].shape)
        if not op.IsDone():
            raise GeometryError(f"the {word} of these solids failed in the kernel")
        shape = op.Shape()
        if shape.IsNull() or _count(shape, TopAbs_SOLID) == 0:
            raise GeometryError(f"the {word} of these solids is empty")
        return shape

    return run


def _edge_list(solid: Solid, value: Any) -> list[Any]:
    emap = _unique(solid.shape, TopAbs_EDGE)
    count = emap.Extent()
    if value == "all":
        indices = list(range(count))
    elif isinstance(value, list | tuple) and value:
        indices = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < count:
                raise GeometryError(
                    f'edges must be edge indices in 0..{count - 1} or "all", got {v!r}'
                )
            indices.append(v)
        if len(set(indices)) != len(indices):
            raise GeometryError("edges must not repeat an index")
    else:
        raise GeometryError(
            f'edges must be a non-empty list of edge indices or "all", got {value!r}'
        )
    edges = [TopoDS.Edge(emap.FindKey(i + 1)) for i in indices]
    return [e for e in edges if not BRep_Tool.Degenerated_s(e)]


def _blend(kind: str) -> Callable[[dict[str, Any], list[Solid]], TopoDS_Shape]:
    word = "radius" if kind == "fillet" else "distance"

    def run(p: dict[str, Any], inputs: list[Solid]) -> TopoDS_Shape:
        size = _positive(word, p[word])
        edges = _edge_list(inputs[0], p["edges"])
        maker: BRepFilletAPI_MakeFillet | BRepFilletAPI_MakeChamfer
        maker = (
            BRepFilletAPI_MakeFillet(inputs[0].shape)
            if kind == "fillet"
            else BRepFilletAPI_MakeChamfer(inputs[0].shape)
        )
        for e in edges:
            maker.Add(size, e)
        try:
            maker.Build()
            ok = maker.IsDone()
            shape = maker.Shape() if ok else None
        except Exception:  # StdFail_NotDone and kin
            ok, shape = False, None
        if not ok or shape is None or not BRepCheck_Analyzer(shape).IsValid():
            raise GeometryError(
                f"the {kind} {word} {size:g} is too large for these edges (or the {kind} failed); "
                f"try a smaller {word}"
            )
        return shape

    return run


FEATURES: dict[str, Feature] = {
    f.name: f
    for f in (
        Feature("box", 0, {"size": REQUIRED, "corner": _ORIGIN}, "box {size} at {corner}", _box),
        Feature(
            "sphere",
            0,
            {"radius": REQUIRED, "center": _ORIGIN},
            "sphere r={radius} at {center}",
            _sphere,
        ),
        Feature(
            "cylinder",
            0,
            {"radius": REQUIRED, "height": REQUIRED, "base": _ORIGIN, "axis": _Z},
            "cylinder r={radius} h={height} at {base}",
            _cylinder,
        ),
        Feature(
            "cone",
            0,
            {
                "radius1": REQUIRED,
                "radius2": REQUIRED,
                "height": REQUIRED,
                "base": _ORIGIN,
                "axis": _Z,
            },
            "cone r1={radius1} r2={radius2} h={height} at {base}",
            _cone,
        ),
        Feature(
            "torus",
            0,
            {"major_radius": REQUIRED, "minor_radius": REQUIRED, "center": _ORIGIN, "axis": _Z},
            "torus R={major_radius} r={minor_radius} at {center}",
            _torus,
        ),
        Feature("prism", 0, {"polygon": REQUIRED, "height": REQUIRED}, "prism h={height}", _prism),
        Feature("translate", 1, {"vector": REQUIRED}, "translate {a} by {vector}", _translate),
        Feature(
            "rotate",
            1,
            {"axis_point": _ORIGIN, "axis_direction": _Z, "angle_degrees": REQUIRED},
            "rotate {a} by {angle_degrees} deg about {axis_direction}",
            _rotate,
        ),
        Feature(
            "scale", 1, {"factor": REQUIRED, "center": _ORIGIN}, "scale {a} by {factor}", _scale
        ),
        Feature(
            "mirror",
            1,
            {"plane_point": _ORIGIN, "plane_normal": REQUIRED},
            "mirror {a} in the plane with normal {plane_normal}",
            _mirror,
        ),
        Feature("union", 2, {}, "union of {a} and {b}", _boolean(BRepAlgoAPI_Fuse, "union")),
        Feature("difference", 2, {}, "{a} minus {b}", _boolean(BRepAlgoAPI_Cut, "difference")),
        Feature(
            "intersection",
            2,
            {},
            "intersection of {a} and {b}",
            _boolean(BRepAlgoAPI_Common, "intersection"),
        ),
        Feature(
            "fillet",
            1,
            {"radius": REQUIRED, "edges": REQUIRED},
            "fillet {a} r={radius}",
            _blend("fillet"),
        ),
        Feature(
            "chamfer",
            1,
            {"distance": REQUIRED, "edges": REQUIRED},
            "chamfer {a} d={distance}",
            _blend("chamfer"),
        ),
    )
}


def build(feature: str, parameters: dict[str, Any], inputs: list[Solid]) -> Solid:
    """Evaluate one feature on its input solids; the result is checked by OpenCascade's
    analyser (BRepCheck) and must hold a solid with a positive volume."""
    spec = FEATURES.get(feature)
    if spec is None:
        raise GeometryError(f"unknown feature {feature!r}; known: {', '.join(FEATURES)}")
    if not isinstance(parameters, dict):
        raise GeometryError(f"parameters must be an object, got {type(parameters).__name__}")
    unknown = sorted(set(parameters) - set(spec.parameters))
    if unknown:
        raise GeometryError(
            f"{feature} has no parameter {', '.join(unknown)}; "
            f"it takes: {', '.join(spec.parameters) or 'none'}"
        )
    missing = [k for k, v in spec.parameters.items() if v is REQUIRED and parameters.get(k) is None]
    if missing:
        raise GeometryError(f"{feature} needs {', '.join(missing)}")
    if len(inputs) != spec.inputs:
        raise GeometryError(f"{feature} takes {spec.inputs} input solid(s), got {len(inputs)}")
    if not all(isinstance(s, Solid) for s in inputs):
        raise GeometryError("entity is not a solid")
    values = {**spec.parameters, **parameters}
    try:
        shape = spec.run(values, list(inputs))
    except GeometryError:
        raise
    except Exception as exc:  # a kernel failure on valid-looking input
        raise GeometryError(f"{feature} failed in the kernel: {exc}") from exc
    return _checked(shape, f"the {feature} result")


# ---------------------------------------------------------------------------------------------
# helpers


def _count(shape: TopoDS_Shape, kind: Any) -> int:
    return _unique(shape, kind).Extent()


def _unique(shape: TopoDS_Shape, kind: Any) -> _ShapeMap:
    """Distinct sub-shapes in OpenCascade's deterministic exploration order."""
    m = _ShapeMap()
    TopExp.MapShapes_s(shape, kind, m)
    return m


def _bbox(shape: TopoDS_Shape) -> list[list[float]]:
    box = Bnd_Box()
    box.SetGap(0.0)
    BRepBndLib.AddOptimal_s(shape, box, False, False)
    lo, hi = box.CornerMin(), box.CornerMax()
    return [[lo.X(), lo.Y(), lo.Z()], [hi.X(), hi.Y(), hi.Z()]]


def _checked(shape: TopoDS_Shape, what: str) -> Solid:
    """Wrap a kernel result after OpenCascade's analyser accepts it and its volume is positive;
    a lone shell or face (e.g. from a surface-only STEP file) is not a solid."""
    if _count(shape, TopAbs_SOLID) == 0:
        raise GeometryError(f"entity is not a solid: {what} holds no closed volume")
    if not BRepCheck_Analyzer(shape).IsValid():
        raise GeometryError(f"{what} is not a valid solid (OpenCascade's BRepCheck rejects it)")
    solid = Solid(shape)  # its volume and box, computed here once, serve properties() too
    volume = solid._volume_properties().Mass()
    if not volume > _EPS * math.dist(*solid.bbox()) ** 3:
        raise GeometryError(f"{what} has no volume ({volume:g})")
    return solid
