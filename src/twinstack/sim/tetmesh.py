"""Tetrahedral meshes of B-rep solids on netgen, one physical group per input solid.

The inputs are OpenCascade B-rep bytes (what `twinstack.sim.cad.Solid.to_brep` writes). This
module must never import `twinstack.sim.cad`: OCP and netgen.occ carry their own OpenCascade
bindings and clash in one process, so the B-rep text is the hand-over between the two.

Several regions are meshed as one conforming mesh: the solids are glued (netgen.occ `Glue`,
OpenCascade's general fuse), so a face two solids share is meshed once and the tets on both
sides use its triangles. Overlaps: the later region in the list wins; each region is cut by the
union of the regions after it before gluing, so every point of space belongs to one region.
Each glued solid carries its region's internal name ("r<index>") as its netgen material, and
netgen keeps names through the booleans; a tet's domain number maps back to its region that way.

netgen's meshing state is process-global (its shape property map, its message level), so one
lock serializes `mesh_solids` and `estimate` in a process. netgen is run single-threaded: its
TaskManager made the box-with-hole mesh 2.6x slower on a 2-core machine (1.83 s against 0.70 s).
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import meshio

# Calibrated against netgen 6.2.2608 on a 2x2x2 box and the box with a spherical hole: a
# uniform size h gives 4.1-5.1 tets per h^3 of volume (more at coarse sizes, where the surface
# dominates); 5.0 errs on the high side. Curved faces and small features refine beyond maxh,
# so the estimate is of the size asked for, not a bound.
TETS_PER_H3 = 5.0
# Peak resident memory of generation per tet: measured 475-700 B between 260k and 35k tets.
BYTES_PER_TET = 700
MAX_TETS = 5_000_000
FORMATS = ("vtu", "msh", "abaqus", "netgen")
_SUFFIX = {"vtu": ".vtu", "msh": ".msh", "abaqus": ".inp", "netgen": ".vol"}
_MESHIO_FORMAT = {"vtu": "vtu", "msh": "gmsh22", "abaqus": "abaqus", "netgen": "netgen"}
_LOCK = threading.Lock()


class MeshingError(ValueError):
    """A meshing request that cannot be satisfied: the message says what and the limit."""


@dataclass(frozen=True)
class Region:
    """One input solid (or compound of solids) = one physical group of the mesh."""

    name: str
    brep: bytes
    material: str | None = None
    maxh: float | None = None  # element size inside this region; None: the global maxh


@dataclass(frozen=True)
class Refinement:
    """Elements no larger than `maxh` within `radius` of `center` (netgen grades out of it)."""

    center: tuple[float, float, float]
    radius: float
    maxh: float


@dataclass
class TetMesh:
    """Linear tets. `boundary` holds the outer surface and the interfaces between regions;
    `boundary_region[k]` is the region an outer triangle bounds, oriented out of it, or -1 for
    an interface triangle, oriented out of the lower-numbered of its two regions."""

    points: np.ndarray  # (n, 3) float64
    tets: np.ndarray  # (m, 4) int64, positively oriented
    region: np.ndarray  # (m,) int32 index into `regions`
    regions: list[str]
    materials: list[str | None]
    boundary: np.ndarray  # (k, 3) int64
    boundary_region: np.ndarray  # (k,) int32
    interface_regions: np.ndarray = field(
        default_factory=lambda: np.zeros((0, 2), np.int32)
    )  # (k, 2) the two regions on either side of each triangle, -1 for outside

    def tet_volumes(self) -> np.ndarray:
        p = self.points[self.tets]
        a, b, c = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]
        return np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0

    def volume(self) -> float:
        return float(self.tet_volumes().sum())

    def region_volumes(self) -> dict[str, float]:
        v = np.bincount(self.region, weights=self.tet_volumes(), minlength=len(self.regions))
        return {name: float(v[i]) for i, name in enumerate(self.regions)}

    def quality(self, bins: int = 10) -> dict[str, Any]:
        """Dihedral angles and the radius ratio 3 r_in / R_circ (1 for the regular tet)."""
        dihedral = dihedral_angles(self.points, self.tets)
        ratio = radius_ratios(self.points, self.tets)
        counts, edges = np.histogram(ratio, bins=bins, range=(0.0, 1.0))
        empty = len(self.tets) == 0
        return {
            "tets": len(self.tets),
            "points": len(self.points),
            "min_dihedral_deg": math.nan if empty else float(dihedral.min()),
            "max_dihedral_deg": math.nan if empty else float(dihedral.max()),
            "radius_ratio": {
                "min": math.nan if empty else float(ratio.min()),
                "mean": math.nan if empty else float(ratio.mean()),
                "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
            },
        }

    def to_meshio(self) -> meshio.Mesh:
        """Tets and boundary triangles. cell_data "region": the tet's region, the triangle's
        `boundary_region`; "gmsh:physical" numbers the region i as 3-D group i + 1, the outer
        boundary of region i as 2-D group i + 1 ("<name>_boundary") and the interfaces as 2-D
        group len(regions) + 1 ("interfaces"), named in field_data."""
        import meshio

        n = len(self.regions)
        surface_tag = np.where(self.boundary_region >= 0, self.boundary_region + 1, n + 1)
        physical = [(self.region + 1).astype(np.int32), surface_tag.astype(np.int32)]
        field_data: dict[str, np.ndarray] = {}
        for i, name in enumerate(self.regions):
            field_data[name] = np.array([i + 1, 3])
            field_data[f"{name}_boundary"] = np.array([i + 1, 2])
        field_data["interfaces"] = np.array([n + 1, 2])
        return meshio.Mesh(
            self.points,
            [("tetra", self.tets), ("triangle", self.boundary)],
            cell_data={
                "region": [self.region.astype(np.int32), self.boundary_region.astype(np.int32)],
                "gmsh:physical": physical,
                "gmsh:geometrical": [a.copy() for a in physical],
            },
            field_data=field_data,
        )

    def write(self, format: str) -> bytes:
        """One of FORMATS: "vtu" (binary, compressed), "msh" (gmsh 2.2 ASCII, physical groups
        only),
        "abaqus" (.inp, one ELSET per region and per boundary group) or "netgen" (.vol, the
        region as netgen's domain index, region + 1)."""
        import meshio

        if format not in FORMATS:
            raise MeshingError(f"unknown mesh format {format!r}; known: {', '.join(FORMATS)}")
        mesh = self.to_meshio()
        kwargs: dict[str, Any] = {}
        if format == "msh":
            # meshio 5.3 writes numpy 2 integers as "np.int32(0)" in ASCII element data and
            # fails on binary 2.2 with two cell types: the physical groups carry the regions
            kwargs["binary"] = False
            del mesh.cell_data["region"]
        elif format == "abaqus":
            mesh.cell_data = {}
            for i, name in enumerate(self.regions):
                mesh.cell_sets[name] = [np.flatnonzero(self.region == i), np.zeros(0, int)]
                mesh.cell_sets[f"{name}_boundary"] = [
                    np.zeros(0, int), np.flatnonzero(self.boundary_region == i)]
            mesh.cell_sets["interfaces"] = [np.zeros(0, int),
                                            np.flatnonzero(self.boundary_region < 0)]
        elif format == "netgen":
            mesh.cell_data = {"netgen:index": mesh.cell_data["gmsh:physical"]}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"mesh{_SUFFIX[format]}"
            meshio.write(path, mesh, file_format=_MESHIO_FORMAT[format], **kwargs)
            return path.read_bytes()


# ---------------------------------------------------------------------------------------------
# geometry in (netgen.occ, never OCP)


def _netgen() -> tuple[Any, Any]:
    import netgen.meshing as ngm
    import netgen.occ as ngocc

    ngm.SetMessageImportance(0)  # netgen prints its progress to stdout otherwise
    return ngocc, ngm


def _check_size(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MeshingError(f"{what} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise MeshingError(f"{what} must be a positive finite number, got {value}")
    return float(value)


def _check_sizes(maxh: float, refinements: Sequence[Refinement]) -> None:
    _check_size(maxh, "maxh")
    for k, ref in enumerate(refinements):
        _check_size(ref.maxh, f"maxh of refinement {k}")
        _check_size(ref.radius, f"radius of refinement {k}")
        if len(ref.center) != 3 or not all(math.isfinite(float(c)) for c in ref.center):
            raise MeshingError(f"centre of refinement {k} must be three finite numbers")


def _check_request(regions: Sequence[Region], maxh: float,
                   refinements: Sequence[Refinement]) -> None:
    _check_sizes(maxh, refinements)
    if not regions:
        raise MeshingError("no regions to mesh: give at least one solid")
    names = [r.name for r in regions]
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise MeshingError(f"region names must be distinct non-empty strings, got {names}")
    for r in regions:
        if r.maxh is not None:
            _check_size(r.maxh, f"maxh of region {r.name!r}")


def _load(region: Region, ngocc: Any, tmp: str, index: int) -> Any:
    """The region's shape, read by netgen's OpenCascade. The header is checked first: OCC
    writes its complaints about foreign data to stdout."""
    data = region.brep
    if not isinstance(data, bytes | bytearray) or not data.strip():
        raise MeshingError(f"the B-rep of region {region.name!r} is empty")
    if b"CASCADE Topology" not in data[:200]:
        raise MeshingError(
            f"the B-rep of region {region.name!r} could not be read: it is not OpenCascade's "
            "BRep text format (no 'CASCADE Topology' header)")
    path = os.path.join(tmp, f"region{index}.brep")
    with open(path, "wb") as f:
        f.write(data)
    try:
        shape = ngocc.OCCGeometry(path).shape
    except Exception as exc:
        raise MeshingError(f"the B-rep of region {region.name!r} could not be read: {exc}"
                           ) from exc
    if len(shape.solids) == 0:
        raise MeshingError(f"the B-rep of region {region.name!r} holds no solid "
                           f"(a {str(shape.type).rsplit('.', 1)[-1].lower()}): nothing to fill")
    return shape


def _estimate(volumes: Sequence[float], sizes: Sequence[float],
              refinements: Sequence[Refinement]) -> dict[str, Any]:
    tets = sum(TETS_PER_H3 * v / h**3 for v, h in zip(volumes, sizes, strict=True))
    for ref in refinements:
        ball = 4 / 3 * math.pi * ref.radius**3
        tets += TETS_PER_H3 * ball / ref.maxh**3
    count = round(tets)
    return {"tets": count, "memory_bytes": count * BYTES_PER_TET}


def _too_many(est: dict[str, Any], max_tets: int) -> MeshingError:
    return MeshingError(
        f"the mesh would have about {est['tets']:,} tetrahedra "
        f"(~{est['memory_bytes'] / 2**20:,.0f} MiB to generate), more than the limit "
        f"{max_tets:,}: use a larger maxh")


def estimate(regions: Sequence[Region], maxh: float, bbox_volume: float | None = None, *,
             refinements: Sequence[Refinement] = ()) -> dict[str, Any]:
    """Expected tet count and generation memory for these sizes: TETS_PER_H3 tets per h^3 of
    each region's volume (its own maxh, at most the global one), plus each refinement ball.
    With `bbox_volume` the B-reps are not read: that volume at the global maxh."""
    if bbox_volume is not None:
        _check_sizes(maxh, refinements)
        return _estimate([_check_size(bbox_volume, "bbox_volume")], [maxh], refinements)
    _check_request(regions, maxh, refinements)
    ngocc, _ = _netgen()
    with _LOCK, tempfile.TemporaryDirectory() as tmp:
        volumes = [float(_load(r, ngocc, tmp, i).mass) for i, r in enumerate(regions)]
    return _estimate(volumes, [_region_h(r, maxh) for r in regions], refinements)


def _region_h(region: Region, maxh: float) -> float:
    return maxh if region.maxh is None else min(maxh, region.maxh)


# ---------------------------------------------------------------------------------------------
# meshing


def mesh_solids(
    regions: Sequence[Region],
    maxh: float,
    *,
    refinements: Sequence[Refinement] = (),
    grading: float = 0.3,
    curvature_safety: float | None = None,
    optimize_steps: int = 3,
    max_tets: int = MAX_TETS,
) -> TetMesh:
    """One conforming tet mesh of the regions (later regions win overlaps). `maxh` bounds the
    element size everywhere; a region's own maxh and the refinement balls lower it locally.
    `curvature_safety` (netgen's default 2) is how many elements per radius of curvature on
    curved faces: raise it to resolve holes and fillets without a smaller maxh.
    `optimize_steps` (netgen's optsteps3d) rounds of 3-D smoothing and swapping: most of
    netgen's time; fewer give more, worse-shaped tets sooner."""
    _check_request(regions, maxh, refinements)
    if not math.isfinite(grading) or not 0 < grading <= 1:
        raise MeshingError(f"grading must be in (0, 1], got {grading}")
    if curvature_safety is not None:
        _check_size(curvature_safety, "curvature_safety")
    if isinstance(optimize_steps, bool) or not isinstance(optimize_steps, int) \
            or not 0 <= optimize_steps <= 10:
        raise MeshingError(f"optimize_steps must be an integer from 0 to 10, got {optimize_steps}")
    ngocc, ngm = _netgen()
    with _LOCK:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                shapes = [_load(r, ngocc, tmp, i) for i, r in enumerate(regions)]
            sizes = [_region_h(r, maxh) for r in regions]
            est = _estimate([float(s.mass) for s in shapes], sizes, refinements)
            if est["tets"] > max_tets:
                raise _too_many(est, max_tets)
            glued = _glue(shapes, sizes, regions, ngocc)
            mesh = _generate(glued, maxh, refinements, grading, curvature_safety,
                             optimize_steps, ngocc, ngm)
            result = _arrays(mesh, regions)
        finally:
            ngocc.ResetGlobalShapeProperties()  # names and sizes of this call's shapes
    if len(result.tets) > max_tets:
        raise MeshingError(f"the mesh has {len(result.tets):,} tetrahedra, more than the limit "
                           f"{max_tets:,} (estimated {est['tets']:,}): use a larger maxh")
    return result


def _glue(shapes: list[Any], sizes: list[float], regions: Sequence[Region], ngocc: Any) -> Any:
    parts = []
    for i, shape in enumerate(shapes):
        for later in shapes[i + 1:]:
            shape = shape - later
        if len(shape.solids) == 0 or shape.mass <= 0:
            raise MeshingError(f"region {regions[i].name!r} lies entirely inside later regions:"
                               " nothing of it is left to mesh")
        for solid in shape.solids:
            solid.mat(f"r{i}")
            if regions[i].maxh is not None:
                solid.maxh = sizes[i]
        parts.append(shape)
    if len(parts) == 1 and len(parts[0].solids) == 1:
        return parts[0]
    return ngocc.Glue(parts)  # also the solids of one region's compound, with each other


def _generate(shape: Any, maxh: float, refinements: Sequence[Refinement], grading: float,
              curvature_safety: float | None, optimize_steps: int, ngocc: Any, ngm: Any) -> Any:
    mp = ngm.MeshingParameters(maxh=maxh, grading=grading, optsteps3d=optimize_steps)
    for ref in refinements:
        # netgen restricts the size at points (its octree cell); a grid of them fills the ball
        n = math.ceil(ref.radius / ref.maxh)
        axis = np.arange(-n, n + 1) * ref.maxh
        grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        grid = grid[np.linalg.norm(grid, axis=1) <= ref.radius] + np.asarray(ref.center, float)
        for x, y, z in grid.tolist():
            mp.RestrictH(x=x, y=y, z=z, h=ref.maxh)
    kwargs = {} if curvature_safety is None else {"curvaturesafety": curvature_safety}
    try:
        return ngocc.OCCGeometry(shape).GenerateMesh(mp, **kwargs)
    except Exception as exc:
        raise MeshingError(f"netgen could not mesh the solids: {exc}") from exc


def _arrays(mesh: Any, regions: Sequence[Region]) -> TetMesh:
    points = np.array(mesh.Coordinates(), dtype=np.float64)
    vol = mesh.Elements3D().NumPy()
    tets = vol["nodes"][:, :4].astype(np.int64) - 1  # netgen numbers points from 1
    # netgen's domain d (1-based) -> region index, through the material name "r<i>"
    domain = np.full(mesh.GetNDomains() + 1, -1, np.int32)
    for d in range(1, mesh.GetNDomains() + 1):
        name = mesh.GetMaterial(d)
        if name.startswith("r") and name[1:].isdigit():
            domain[d] = int(name[1:])
    region = domain[vol["index"]]
    if len(tets) == 0 or region.min() < 0:
        raise MeshingError("netgen lost the region of some solids while meshing them")
    p = points[tets]
    signed = np.einsum("ij,ij->i", p[:, 1] - p[:, 0],
                       np.cross(p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]))
    flip = signed < 0  # netgen's tets are negatively oriented
    tets[flip] = tets[flip][:, [1, 0, 2, 3]]

    surf = mesh.Elements2D().NumPy()
    tris = surf["nodes"][:, :3].astype(np.int64) - 1
    inside = np.zeros(mesh.GetNFaceDescriptors() + 1, np.int32)
    outside = np.zeros_like(inside)
    for f in range(1, mesh.GetNFaceDescriptors() + 1):
        fd = mesh.FaceDescriptor(f)
        inside[f], outside[f] = fd.domin, fd.domout
    a, b = domain[inside[surf["index"]]], domain[outside[surf["index"]]]
    keep = a != b  # faces between two solids of one region are no boundary
    tris, a, b = tris[keep], a[keep], b[keep]
    # netgen's triangle normal points from domin to domout: flip where the region we report
    # it as bounding (the only region, or the lower of two) is the domout side
    owner = np.where(a < 0, b, np.where(b < 0, a, np.minimum(a, b)))
    flip = owner == b
    tris[flip] = tris[flip][:, [1, 0, 2]]
    interface = (a >= 0) & (b >= 0)
    return TetMesh(
        points=points,
        tets=np.ascontiguousarray(tets),
        region=region.astype(np.int32),
        regions=[r.name for r in regions],
        materials=[r.material for r in regions],
        boundary=np.ascontiguousarray(tris),
        boundary_region=np.where(interface, -1, owner).astype(np.int32),
        interface_regions=np.stack([a, b], 1).astype(np.int32),
    )


# ---------------------------------------------------------------------------------------------
# quality


def dihedral_angles(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """(m, 6) interior dihedral angles in degrees, from the faces' outward normals."""
    p = points[tets]
    normals = []
    for i, (a, b, c) in enumerate(((1, 2, 3), (0, 2, 3), (0, 1, 3), (0, 1, 2))):
        n = np.cross(p[:, b] - p[:, a], p[:, c] - p[:, a])
        n *= np.sign(np.einsum("ij,ij->i", n, p[:, a] - p[:, i]))[:, None]  # away from i
        normals.append(n / np.linalg.norm(n, axis=1)[:, None])
    cosines = [-np.einsum("ij,ij->i", normals[i], normals[j])
               for i in range(4) for j in range(i + 1, 4)]
    return np.degrees(np.arccos(np.clip(np.stack(cosines, 1), -1.0, 1.0)))


def radius_ratios(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """3 * inradius / circumradius per tet: 1 for the regular tet, 0 for a flat one."""
    p = points[tets]
    u, v, w = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]
    six_v = np.einsum("ij,ij->i", u, np.cross(v, w))
    area = sum(np.linalg.norm(np.cross(p[:, b] - p[:, a], p[:, c] - p[:, a]), axis=1) / 2
               for a, b, c in ((1, 2, 3), (0, 2, 3), (0, 1, 3), (0, 1, 2)))
    inradius = np.abs(six_v) / 2 / area  # 3 V / area
    offset = (np.einsum("ij,ij->i", u, u)[:, None] * np.cross(v, w)
              + np.einsum("ij,ij->i", v, v)[:, None] * np.cross(w, u)
              + np.einsum("ij,ij->i", w, w)[:, None] * np.cross(u, v))
    with np.errstate(divide="ignore", invalid="ignore"):
        circumradius = np.linalg.norm(offset, axis=1) / np.abs(2 * six_v)
        return np.nan_to_num(3 * inradius / circumradius, nan=0.0)
