"""Geometry entities as the compute services read them: an exact solid (B-rep blob) or a
triangle mesh (STL blob, for imported meshes), kept in memory by blob hash (a blob never
changes). The kernel (OpenCascade) is imported on first use, on the caller's compute thread.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Any

from twinstack.store.blobs import BlobStore, CorruptBlob
from twinstack.store.errors import NotFound
from twinstack.wire.errors import ActionError

MESH = "mesh"  # the representation of imported triangle meshes
BREP = "brep"


@dataclass
class Shape:
    """A geometry entity's shape: an exact solid (B-rep) or a triangle mesh."""

    representation: str
    value: Any  # sim.cad.Solid or sim.meshbool.Mesh


def blob_bytes(blobs: BlobStore, digest: str, what: str) -> bytes:
    """A blob an entity names, or 409 when it cannot be read (lost or damaged)."""
    try:
        return blobs.get(digest)
    except (NotFound, CorruptBlob) as exc:
        raise ActionError(409, "missing_data", f"the data of {what} cannot be read: {exc}") \
            from exc


def default_tolerance(solid: Any) -> float:
    """0.1 % of the solid's size: what a screen shows smooth."""
    return max(math.dist(*solid.bbox()) * 1e-3, 1e-9)


class ShapeCache:
    """Shapes read from their blobs, the most recently used `size` kept."""

    def __init__(self, blobs: BlobStore, size: int = 64) -> None:
        self.blobs = blobs
        self.size = size
        self.shapes: collections.OrderedDict[str, Shape] = collections.OrderedDict()

    def get(self, entity: dict[str, Any], field: str = "params.inputs") -> Shape:
        """An entity's shape (422 naming `field` when the entity is not a shape)."""
        from twinstack.sim import cad, meshbool

        if entity["kind"] != "geometry":
            raise ActionError(422, "invalid_geometry", f"{entity['name']} is a "
                              f"{entity['kind']}, not a shape", field)
        representation = entity["properties"].get("representation", BREP)
        digest = entity["blobs"].get(representation)
        if digest is None:
            raise ActionError(422, "invalid_geometry", f"{entity['name']} has no "
                              f"{representation} data", field)
        if (cached := self.shapes.get(digest)) is not None:
            self.shapes.move_to_end(digest)
            return cached
        data = blob_bytes(self.blobs, digest, f"the shape {entity['name']}")
        shape = Shape(representation, cad.Solid.from_brep(data) if representation == BREP
                      else meshbool.Mesh.from_stl(data))
        self.remember(digest, shape)
        return shape

    def remember(self, digest: str, shape: Shape) -> None:
        self.shapes[digest] = shape
        while len(self.shapes) > self.size:
            self.shapes.popitem(last=False)

    def triangles(self, entity: dict[str, Any], tolerance: float | None = None,
                  field: str = "params.solids") -> tuple[Any, Any]:
        """An entity's surface as (vertices, faces): a solid triangulated within `tolerance`
        (default: 0.1 % of its size), or a mesh as it is."""
        from twinstack.sim import cad

        shape = self.get(entity, field)
        if shape.representation == MESH:
            return shape.value.vertices, shape.value.faces
        try:
            return shape.value.triangles(tolerance or default_tolerance(shape.value))
        except cad.GeometryError as exc:
            raise ActionError(422, "invalid_geometry", f"{entity['name']}: {exc}",
                              "params.tolerance") from exc
