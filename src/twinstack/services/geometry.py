"""Geometry entities as the compute services read them: an exact solid (B-rep blob) or a
triangle mesh (STL blob, for imported meshes), kept in memory by blob hash (a blob never
changes). The kernel (OpenCascade) is imported on first use, on the caller's compute thread.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from twinstack.store.blobs import BlobStore, CorruptBlob
from twinstack.store.errors import NotFound
from twinstack.wire.errors import ActionError

# Which solids a mesh or a picture is made of (None: every solid of the model).
Solids = Annotated[list[str] | None, Field(
    None, min_length=1, max_length=10_000,
    description="geometry entity ids (default: every solid of the model), later ones win "
    "overlaps")]
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


def chosen_solids(found: list[dict[str, Any]], ids: list[str] | None) -> list[dict[str, Any]]:
    """The solids a mesh is made of: those named (in that order), or every solid of the
    model; 404 for an unknown id, 422 for an empty model or an entity that is not a solid."""
    if ids is None:
        solids = [e for e in found if e["kind"] == "geometry"]
        if not solids:
            raise ActionError(422, "empty_model", "the model has no solids to mesh",
                              "params.solids")
        return solids
    by_id = {e["id"]: e for e in found}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ActionError(404, "not_found", f"no entity {missing[0]} in the model",
                          "params.solids")
    solids = [by_id[i] for i in ids]
    wrong = [e["name"] for e in solids if e["kind"] != "geometry"]
    if wrong:
        raise ActionError(422, "invalid_params", f"{wrong[0]} is not a solid", "params.solids")
    return solids


def only_solids(mapping: dict[str, Any], solids: list[dict[str, Any]], field: str) -> None:
    """422 when a per-solid setting names an entity that is not being meshed."""
    unknown = sorted(set(mapping) - {s["id"] for s in solids})
    if unknown:
        raise ActionError(422, "invalid_params", f"{field} names {unknown[0]}, which is not "
                          "being meshed", f"params.{field}")
