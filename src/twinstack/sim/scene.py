"""GLB scenes for the browser (three.js): solids, meshes and their edges as glTF 2.0 binary.

The container is written here with numpy and json rather than through trimesh: trimesh
colours line sets only through per-vertex colours and decides normals itself, while a
mesh view needs exactly one node per part (named as the part), a blended material for
see-through parts, and a LINES primitive for edges. The layout is fixed, so equal input
gives equal bytes (the service caches GLB by the hash of its input).

Normals are split at creases: faces are grouped into smoothing groups (connected across
edges where neighbouring faces meet at no more than `CREASE_DEG`) and each vertex gets one
normal per group that touches it, the angle-weighted mean of that group's faces there. A box
stays flat-shaded with sharp edges, a tessellated cylinder shades round.

Coordinates are written as given (no axis swap): glTF says +Y is up, our models are +Z up,
so the viewer turns the camera, not the data.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

Color = tuple[float, float, float, float]

CREASE_DEG = 30.0  # faces meeting at more than this keep their own normals
DEFAULT_COLOR: Color = (0.7, 0.7, 0.75, 1.0)
# Distinct, light enough that black edges show on them (a qualitative palette).
PALETTE: tuple[Color, ...] = (
    (0.40, 0.61, 0.84, 1.0),
    (0.96, 0.60, 0.32, 1.0),
    (0.45, 0.75, 0.45, 1.0),
    (0.86, 0.42, 0.42, 1.0),
    (0.68, 0.56, 0.80, 1.0),
    (0.70, 0.55, 0.48, 1.0),
    (0.90, 0.62, 0.80, 1.0),
    (0.75, 0.75, 0.40, 1.0),
    (0.45, 0.78, 0.80, 1.0),
    (0.65, 0.65, 0.65, 1.0),
)

# Faces of a positively oriented tetrahedron (a, b, c, d), each wound outward.
_TET_FACES = np.array([[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]])

_FLOAT, _UINT32 = 5126, 5125  # glTF component types
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_LINES, _TRIANGLES = 1, 4


@dataclass
class Part:
    """One named, coloured surface with optional line segments (its feature or element edges).

    A part without faces draws only its `edges`, in its own colour."""

    name: str
    vertices: np.ndarray  # (n, 3) float
    faces: np.ndarray  # (m, 3) int; may be empty
    color: tuple[float, float, float, float] = DEFAULT_COLOR
    edges: np.ndarray | None = None  # (k, 2, 3) segments


# --- GLB ------------------------------------------------------------------------------------


def glb(parts: Sequence[Part], *, edge_color: Color = (0.1, 0.1, 0.1, 1.0)) -> bytes:
    """One GLB: a node and mesh per part named `part.name` with a PBR material of `part.color`
    (alpha < 1: blended), POSITION and NORMAL; with edges, a sibling node "<name> edges" holding
    a LINES primitive in `edge_color`. A part without faces is one node of lines.

    three.js renames nodes on load (whitespace becomes "_", ".:/[]" are dropped), so the
    browser sees "<name>_edges"; the glTF JSON keeps the names as given."""
    writer = _GltfWriter()
    edge_material: int | None = None
    names: set[str] = set()
    for part in parts:
        vertices, faces, edges = _checked(part)
        has_faces = len(faces) > 0
        node_names = [part.name] if has_faces or edges is None else []
        if edges is not None:
            node_names.append(f"{part.name} edges" if has_faces else part.name)
        for name in node_names:
            if name in names:
                raise ValueError(f"two nodes would be named {name!r}: part names must differ")
            names.add(name)
        if has_faces:
            material = writer.material(part.name, part.color)
            v, n, f = split_normals(vertices, faces)
            writer.node(part.name, writer.triangles(v, n, f, material))
        if edges is not None:
            if has_faces:
                if edge_material is None:
                    edge_material = writer.material("edges", _color(edge_color, "edge_color"))
                writer.node(f"{part.name} edges", writer.lines(edges, edge_material))
            else:
                writer.node(part.name, writer.lines(edges, writer.material(part.name, part.color)))
    return writer.to_bytes()


def _checked(part: Part) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if not part.name:
        raise ValueError("a part needs a name")
    v = np.asarray(part.vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(part.faces, dtype=np.int64).reshape(-1, 3)
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"part {part.name!r} has face indices outside its {len(v)} vertices")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"part {part.name!r} has vertices that are not finite")
    e = None
    if part.edges is not None and len(part.edges):
        e = np.asarray(part.edges, dtype=np.float64).reshape(-1, 2, 3)
        if not np.all(np.isfinite(e)):
            raise ValueError(f"part {part.name!r} has edges that are not finite")
    if not len(f) and e is None:
        raise ValueError(f"part {part.name!r} has neither faces nor edges")
    _color(part.color, f"part {part.name!r} color")
    return v, f, e


def _color(color: Sequence[float], what: str) -> Color:
    c = tuple(float(x) for x in color)
    if len(c) != 4 or not all(0.0 <= x <= 1.0 for x in c):
        raise ValueError(f"{what} must be four numbers (RGBA) in [0, 1], got {color!r}")
    return c  # type: ignore[return-value]


class _GltfWriter:
    """Accumulates glTF JSON and one binary buffer (every view 4-byte aligned)."""

    def __init__(self) -> None:
        self.json: dict[str, Any] = {
            "asset": {"version": "2.0", "generator": "twinstack.sim.scene"},
            "scene": 0,
            "scenes": [{"nodes": []}],
            "nodes": [],
            "meshes": [],
            "materials": [],
            "accessors": [],
            "bufferViews": [],
            "buffers": [],
        }
        self.chunks: list[bytes] = []
        self.offset = 0

    def material(self, name: str, color: Color) -> int:
        m: dict[str, Any] = {
            "name": name,
            "pbrMetallicRoughness": {
                "baseColorFactor": [float(c) for c in color],
                "metallicFactor": 0.0,
                "roughnessFactor": 0.8,
            },
            "doubleSided": True,  # open surfaces and the inside of a cut stay visible
        }
        if color[3] < 1.0:
            m["alphaMode"] = "BLEND"
        self.json["materials"].append(m)
        return len(self.json["materials"]) - 1

    def _accessor(self, data: np.ndarray, kind: str, target: int, bounds: bool = False) -> int:
        raw = np.ascontiguousarray(data).tobytes()  # float32 / uint32: 4-byte multiples
        self.json["bufferViews"].append(
            {"buffer": 0, "byteOffset": self.offset, "byteLength": len(raw), "target": target}
        )
        self.chunks.append(raw)
        self.offset += len(raw)
        acc: dict[str, Any] = {
            "bufferView": len(self.json["bufferViews"]) - 1,
            "componentType": _UINT32 if data.dtype == np.uint32 else _FLOAT,
            "count": len(data),
            "type": kind,
        }
        if bounds:  # required for POSITION
            acc["min"] = [float(x) for x in data.min(axis=0)]
            acc["max"] = [float(x) for x in data.max(axis=0)]
        self.json["accessors"].append(acc)
        return len(self.json["accessors"]) - 1

    def triangles(
        self, vertices: np.ndarray, normals: np.ndarray, faces: np.ndarray, material: int
    ) -> dict[str, Any]:
        pos = self._accessor(vertices.astype("<f4"), "VEC3", _ARRAY_BUFFER, bounds=True)
        nrm = self._accessor(normals.astype("<f4"), "VEC3", _ARRAY_BUFFER)
        idx = self._accessor(faces.astype("<u4").reshape(-1), "SCALAR", _ELEMENT_ARRAY_BUFFER)
        return {
            "attributes": {"POSITION": pos, "NORMAL": nrm},
            "indices": idx,
            "material": material,
            "mode": _TRIANGLES,
        }

    def lines(self, segments: np.ndarray, material: int) -> dict[str, Any]:
        pos = self._accessor(segments.reshape(-1, 3).astype("<f4"), "VEC3", _ARRAY_BUFFER, True)
        return {"attributes": {"POSITION": pos}, "material": material, "mode": _LINES}

    def node(self, name: str, primitive: dict[str, Any]) -> None:
        self.json["meshes"].append({"name": name, "primitives": [primitive]})
        self.json["nodes"].append({"name": name, "mesh": len(self.json["meshes"]) - 1})
        self.json["scenes"][0]["nodes"].append(len(self.json["nodes"]) - 1)

    def to_bytes(self) -> bytes:
        binary = b"".join(self.chunks)
        self.json["buffers"].append({"byteLength": len(binary)})
        if not self.json["materials"]:
            del self.json["materials"]
        text = json.dumps(self.json, separators=(",", ":"), ensure_ascii=True).encode()
        text += b" " * (-len(text) % 4)
        binary += b"\0" * (-len(binary) % 4)
        total = 12 + 8 + len(text) + 8 + len(binary)
        return b"".join(
            [
                struct.pack("<4sII", b"glTF", 2, total),
                struct.pack("<I4s", len(text), b"JSON"),
                text,
                struct.pack("<I4s", len(binary), b"BIN\0"),
                binary,
            ]
        )


# --- surfaces, edges, normals -----------------------------------------------------------------


def _face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Un-normalised: twice the area times the unit normal."""
    t = vertices[faces]
    return np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)


def _unique_pairs(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.unique of undirected index pairs (k, 2), with inverse and counts: through one int64
    key per pair, several times faster than np.unique(axis=0)."""
    lo, hi = pairs.min(axis=1), pairs.max(axis=1)
    n = int(hi.max()) + 1 if len(pairs) else 1
    keys, inverse, counts = np.unique(lo * n + hi, return_inverse=True, return_counts=True)
    return np.stack([keys // n, keys % n], axis=1), inverse.reshape(-1), counts


def _edge_faces(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unique undirected edges (k, 2), how many faces share each, and for every edge met by
    exactly two faces, those two faces (first, second) — or -1."""
    m = len(faces)
    edges, inverse, counts = _unique_pairs(faces[:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2))
    order = np.argsort(inverse, kind="stable")
    face_of = np.repeat(np.arange(m), 3)[order]
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pair = counts == 2
    first = np.full(len(edges), -1)
    second = np.full(len(edges), -1)
    first[pair] = face_of[start[pair]]
    second[pair] = face_of[start[pair] + 1]
    return edges, counts, first, second


def _sharp(
    vertices: np.ndarray, faces: np.ndarray, angle_deg: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edges, whether each is a feature (crease over angle_deg, open or non-manifold), and the
    face pairs of the manifold ones."""
    edges, counts, first, second = _edge_faces(faces)
    n = _unit(_face_normals(vertices, faces))
    pair = counts == 2
    cos = np.ones(len(edges))
    cos[pair] = np.einsum("ij,ij->i", n[first[pair]], n[second[pair]])
    sharp = (counts != 2) | (cos < math.cos(math.radians(angle_deg)))
    return edges, sharp, first, second


def feature_edges(vertices: np.ndarray, faces: np.ndarray, angle_deg: float = 30.0) -> np.ndarray:
    """(k, 2, 3) segments where neighbouring faces meet at more than `angle_deg` (their normals
    differ by that much), plus open boundary and non-manifold edges: a solid's drawn edges.
    Faces must be consistently oriented for the angle to mean the crease."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if not len(f):
        return np.zeros((0, 2, 3))
    edges, sharp, _, _ = _sharp(v, f, angle_deg)
    return v[edges[sharp]]


def _corner_angles(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(m, 3) interior angle of each triangle at each of its corners."""
    t = vertices[faces]
    a = _unit(np.roll(t, -1, axis=1) - t)  # towards the next corner
    b = _unit(np.roll(t, 1, axis=1) - t)  # towards the previous one
    return np.arccos(np.clip(np.einsum("mki,mki->mk", a, b), -1.0, 1.0))


def split_normals(
    vertices: np.ndarray, faces: np.ndarray, crease_deg: float = CREASE_DEG
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices, unit normals, faces) with each vertex repeated once per smoothing group that
    meets it (groups: faces connected across edges of at most `crease_deg`). Face normals are
    weighted by the face's angle at the vertex, so how a quad strip is split into triangles
    does not tilt the normal (a cylinder's side normals come out radial)."""
    _, sharp, first, second = _sharp(vertices, faces, crease_deg)
    smooth = ~sharp
    m = len(faces)
    graph = coo_matrix((np.ones(int(smooth.sum())), (first[smooth], second[smooth])), (m, m))
    _, group = connected_components(graph, directed=False)
    groups = int(group.max()) + 1 if m else 1
    keys, inverse = np.unique(faces.reshape(-1) * groups + np.repeat(group, 3), return_inverse=True)
    inverse = inverse.reshape(-1)
    vertex_of = keys // groups
    weighted = np.repeat(_unit(_face_normals(vertices, faces)), 3, axis=0) * _corner_angles(
        vertices, faces
    ).reshape(-1, 1)
    normals = np.zeros((len(keys), 3))
    for k in range(3):
        normals[:, k] = np.bincount(inverse, weights=weighted[:, k], minlength=len(keys))
    normals = _unit(normals)
    normals[~normals.any(axis=1)] = (0.0, 0.0, 1.0)  # only degenerate faces there
    return vertices[vertex_of], normals, inverse.reshape(-1, 3)


def _compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used, inverse = np.unique(faces, return_inverse=True)
    return vertices[used], inverse.reshape(faces.shape)


def _element_edges(vertices: np.ndarray, polygons: np.ndarray) -> np.ndarray:
    """Unique sides of polygons (m, k) as (n, 2, 3) segments."""
    sides = np.stack([polygons, np.roll(polygons, -1, axis=1)], axis=2).reshape(-1, 2)
    return vertices[_unique_pairs(sides)[0]]


def _colors(count: int, colors: Sequence[Sequence[float]] | None) -> list[Color]:
    if colors is None:
        return [PALETTE[i % len(PALETTE)] for i in range(count)]
    if len(colors) < count:
        raise ValueError(f"{count} colours needed, {len(colors)} given")
    out = []
    for c in colors[:count]:
        rgba = tuple(float(x) for x in c)
        out.append(_color(rgba if len(rgba) == 4 else (*rgba, 1.0), "a colour"))
    return out


def _plane(clip: tuple[Sequence[float], Sequence[float]] | None) -> tuple[np.ndarray, np.ndarray]:
    assert clip is not None
    origin = np.asarray(clip[0], dtype=np.float64).reshape(3)
    normal = np.asarray(clip[1], dtype=np.float64).reshape(3)
    if not np.any(normal):
        raise ValueError("the clipping plane's normal must not be zero")
    return origin, normal


def _once(keys: np.ndarray) -> np.ndarray:
    """Mask of the rows of an integer array that occur exactly once."""
    if not len(keys):
        return np.zeros(0, dtype=bool)
    order = np.lexsort(keys.T[::-1])
    s = keys[order]
    differs = np.any(s[1:] != s[:-1], axis=1)
    lone = np.concatenate([[True], differs]) & np.concatenate([differs, [True]])
    mask = np.empty(len(keys), dtype=bool)
    mask[order] = lone
    return mask


def tet_surface_parts(
    points: np.ndarray,
    tets: np.ndarray,
    region: np.ndarray,
    names: Sequence[str],
    *,
    clip: tuple[Sequence[float], Sequence[float]] | None = None,
    colors: Sequence[Sequence[float]] | None = None,
) -> list[Part]:
    """The surface of each region of a tetrahedral mesh (its faces that belong to one of its tets
    only: outer boundary and interfaces), wound outward, with the element edges of that
    surface as `edges`. `region[i]` indexes `names` (and `colors`); regions without tets
    give no part. With `clip=(origin, normal)` only the tets whose centroid c has
    normal . (c - origin) <= 0 are kept, so the cut shows the elements inside."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    t = np.asarray(tets, dtype=np.int64).reshape(-1, 4)
    r = np.asarray(region, dtype=np.int64).reshape(-1)
    if len(r) != len(t):
        raise ValueError(f"region has {len(r)} entries for {len(t)} tets")
    if len(t) and (t.min() < 0 or t.max() >= len(p)):
        raise ValueError(f"tet indices outside the {len(p)} points")
    if len(r) and (r.min() < 0 or r.max() >= len(names)):
        raise ValueError(f"region ids must index the {len(names)} names, got {r.min()}..{r.max()}")
    palette = _colors(len(names), colors)
    if clip is not None:
        origin, normal = _plane(clip)
        keep = (p[t].mean(axis=1) - origin) @ normal <= 0
        t, r = t[keep], r[keep]
    # orient every tet positively so that _TET_FACES wind outward
    a = p[t] - p[t[:, :1]]
    volume6 = np.einsum("ij,ij->i", a[:, 1], np.cross(a[:, 2], a[:, 3]))
    t = t.copy()
    t[volume6 < 0, 2:4] = t[volume6 < 0, 3:1:-1]
    faces = t[:, _TET_FACES].reshape(-1, 3)
    face_region = np.repeat(r, 4)
    keys = np.column_stack([face_region, np.sort(faces, axis=1)])
    outer = _once(keys)
    parts = []
    for k, name in enumerate(names):
        f = faces[outer & (face_region == k)]
        if not len(f):
            continue
        v, f = _compact(p, f)
        parts.append(Part(name, v, f, palette[k], _element_edges(v, f)))
    return parts


def voxel_surface_parts(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    material: np.ndarray,
    names: Mapping[int, str],
    *,
    clip: tuple[Sequence[float], Sequence[float]] | None = None,
    colors: Mapping[int, Sequence[float]] | None = None,
) -> list[Part]:
    """A Cartesian mesh's material surfaces: every cell face between different materials, per
    material (0 is background and not drawn), as two triangles wound outward, with the cell
    faces' outlines as `edges`. x, y, z are the cell boundaries (nx + 1, ny + 1, nz + 1);
    `material` is (nx, ny, nz). A material missing from `names` is called "material <id>".
    With `clip`, only cells whose centre c has normal . (c - origin) <= 0 are kept."""
    xs = [np.asarray(c, dtype=np.float64).reshape(-1) for c in (x, y, z)]
    m = np.asarray(material)
    if m.ndim != 3 or m.shape != tuple(len(c) - 1 for c in xs):
        raise ValueError(
            f"material must be (len(x) - 1, len(y) - 1, len(z) - 1) = "
            f"{tuple(len(c) - 1 for c in xs)}, got {m.shape}"
        )
    m = m.astype(np.int64)
    if clip is not None:
        origin, normal = _plane(clip)
        cx, cy, cz = ((c[1:] + c[:-1]) / 2 for c in xs)
        side = (
            ((cx - origin[0]) * normal[0])[:, None, None]
            + ((cy - origin[1]) * normal[1])[None, :, None]
            + ((cz - origin[2]) * normal[2])[None, None, :]
        )
        m = np.where(side <= 0, m, 0)
    padded = np.pad(m, 1)  # background all round: the outer faces are interfaces too
    shape = tuple(len(c) for c in xs)  # node grid
    quads: list[np.ndarray] = []
    owner: list[np.ndarray] = []
    for axis in range(3):
        lo = padded[tuple(slice(0, -1) if a == axis else slice(1, -1) for a in range(3))]
        hi = padded[tuple(slice(1, None) if a == axis else slice(1, -1) for a in range(3))]
        # lo/hi: cells on either side of the node plane index i along `axis`
        u, w = (axis + 1) % 3, (axis + 2) % 3  # (u, w, axis) is right-handed
        for mat, flip in ((lo, False), (hi, True)):
            idx = np.nonzero((lo != hi) & (mat != 0))
            corner = np.stack(idx, axis=1)  # node index of the quad's low corner
            steps = [(0, 0), (1, 0), (1, 1), (0, 1)]  # around +axis
            if flip:
                steps = steps[::-1]
            ring = []
            for du, dw in steps:
                c = corner.copy()
                c[:, u] += du
                c[:, w] += dw
                ring.append(np.ravel_multi_index(c.T, shape))
            quads.append(np.stack(ring, axis=1))
            owner.append(mat[idx])
    quad = np.concatenate(quads) if quads else np.zeros((0, 4), dtype=np.int64)
    mats = np.concatenate(owner) if owner else np.zeros(0, dtype=np.int64)
    parts = []
    for mat in np.unique(mats):
        q = quad[mats == mat]
        used, inverse = np.unique(q, return_inverse=True)
        ijk = np.unravel_index(used, shape)
        v = np.stack([xs[a][ijk[a]] for a in range(3)], axis=1)
        q = inverse.reshape(q.shape)
        f = np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])
        color = PALETTE[(int(mat) - 1) % len(PALETTE)]  # by id: stable under clipping
        if colors is not None and int(mat) in colors:
            rgba = tuple(float(c) for c in colors[int(mat)])
            color = _color(rgba if len(rgba) == 4 else (*rgba, 1.0), f"colour of {mat}")
        name = names.get(int(mat), f"material {int(mat)}")
        parts.append(Part(name, v, f, color, _element_edges(v, q)))
    return parts
