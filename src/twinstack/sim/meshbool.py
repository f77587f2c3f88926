"""Triangle meshes (imported STL/OBJ) and their booleans on manifold3d.

manifold3d guarantees a closed, oriented 2-manifold result for closed manifold inputs; an input
that is open or has an edge shared by more than two triangles is refused with `GeometryError`
saying how many such edges it has. Vertices are merged only where they coincide exactly
(an STL file repeats each vertex per triangle), so the result does not depend on a tolerance.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from twinstack.sim.cad import GeometryError, stl_bytes

MAX_FACES = 5_000_000  # default cap on triangles in an imported mesh or a boolean's result
OPS = ("union", "difference", "intersection")


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh: vertices (n, 3) float64 and faces (m, 3) int64 indices into them."""

    vertices: np.ndarray
    faces: np.ndarray

    @classmethod
    def from_arrays(
        cls, vertices: np.ndarray, faces: np.ndarray, max_faces: int = MAX_FACES
    ) -> Mesh:
        """Validate, merge coincident vertices and drop degenerate (repeated-index) triangles."""
        v = np.asarray(vertices, dtype=np.float64)
        f = np.asarray(faces)
        if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
            raise GeometryError("a mesh needs vertices (n, 3) and triangles (m, 3)")
        if len(f) == 0:
            raise GeometryError("the mesh has no triangles")
        if len(f) > max_faces:
            raise GeometryError(f"the mesh has {len(f)} triangles, more than the limit {max_faces}")
        if not np.all(np.isfinite(v)):
            raise GeometryError("the mesh has vertices that are not finite numbers")
        if f.min() < 0 or f.max() >= len(v):
            raise GeometryError("the mesh has triangle indices outside its vertex list")
        unique, inverse = np.unique(v, axis=0, return_inverse=True)
        f = inverse.reshape(-1)[f.astype(np.int64)]
        keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
        return cls(unique, np.ascontiguousarray(f[keep], dtype=np.int64))

    @classmethod
    def from_stl(cls, data: bytes, max_faces: int = MAX_FACES) -> Mesh:
        return cls._load(data, "stl", max_faces)

    @classmethod
    def from_obj(cls, data: bytes, max_faces: int = MAX_FACES) -> Mesh:
        return cls._load(data, "obj", max_faces)

    @classmethod
    def _load(cls, data: bytes, kind: str, max_faces: int) -> Mesh:
        import trimesh  # the parser only

        if not data:
            raise GeometryError(f"the {kind.upper()} data could not be read: it is empty")
        try:
            loaded = trimesh.load(io.BytesIO(data), file_type=kind, process=False, force="mesh")
        except Exception as exc:
            raise GeometryError(f"the {kind.upper()} data could not be read: {exc}") from exc
        if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
            raise GeometryError(f"the {kind.upper()} data could not be read: no triangles in it")
        return cls.from_arrays(loaded.vertices, loaded.faces, max_faces)

    def to_stl(self) -> bytes:
        return stl_bytes(self.vertices, self.faces)

    @property
    def volume(self) -> float:
        """Signed volume by the divergence theorem (positive for an outward-oriented mesh)."""
        t = self.vertices[self.faces]
        return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6.0)

    @property
    def area(self) -> float:
        t = self.vertices[self.faces]
        return float(
            np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1).sum() / 2
        )

    def check_closed(self) -> None:
        """Every edge in exactly two triangles, once each way; else GeometryError."""
        n = np.int64(len(self.vertices))
        i = self.faces.reshape(-1)
        j = self.faces[:, [1, 2, 0]].reshape(-1)
        directed = i * n + j  # one int64 key per directed edge: 1-D uniques are fast
        _, counts = np.unique(np.minimum(i, j) * n + np.maximum(i, j), return_counts=True)
        boundary = int(np.sum(counts == 1))
        if boundary:
            raise GeometryError(f"the mesh is not closed: {boundary} boundary edges")
        shared = int(np.sum(counts > 2))
        if shared:
            raise GeometryError(
                f"the mesh is not manifold: {shared} edges are shared by more than two triangles"
            )
        if len(np.unique(directed)) != len(directed):
            raise GeometryError("the mesh is not consistently oriented: flipped triangles")


def _manifold(mesh: Mesh) -> object:
    """manifold3d checks manifoldness itself; our own check runs only to explain a refusal."""
    import manifold3d

    m = manifold3d.Manifold(
        manifold3d.Mesh(
            vert_properties=np.ascontiguousarray(mesh.vertices, dtype=np.float32),
            tri_verts=np.ascontiguousarray(mesh.faces, dtype=np.uint32),
        )
    )
    if m.status() != manifold3d.Error.NoError:
        mesh.check_closed()
        raise GeometryError(f"the mesh is not a closed manifold: {m.status().name}")
    return m


def mesh_boolean(op: str, a: Mesh, b: Mesh, max_faces: int = MAX_FACES) -> Mesh:
    """`union`, `difference` (a - b) or `intersection` of two closed manifold meshes."""
    if op not in OPS:
        raise GeometryError(f"unknown mesh boolean {op!r}; known: {', '.join(OPS)}")
    ma, mb = _manifold(a), _manifold(b)
    if op == "union":
        result = ma + mb  # type: ignore[operator]
    elif op == "difference":
        result = ma - mb  # type: ignore[operator]
    else:
        result = ma ^ mb  # type: ignore[operator]
    if result.is_empty():
        raise GeometryError(f"the {op} of these meshes is empty")
    out = result.to_mesh()
    faces = np.asarray(out.tri_verts, dtype=np.int64)
    if len(faces) > max_faces:
        raise GeometryError(f"the {op} has {len(faces)} triangles, more than the limit {max_faces}")
    # manifold3d's output already shares its vertices: no merge needed
    return Mesh(np.asarray(out.vert_properties, dtype=np.float64)[:, :3].copy(), faces)
