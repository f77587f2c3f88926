"""The visualization service: what a browser draws, made from the model's entities.

- `scene`: solids as one GLB (three.js), a named node per solid in its material's colour, its
  edges as lines, normals split at creases;
- `mesh_view`: a Cartesian or tetrahedral mesh as GLB (material or region surfaces with their
  element edges), optionally clipped by a plane so the inside shows;
- `slice`: a field on a mesh (a mesh's own arrays, or a `result` entity's values) cut by a
  plane, as a PNG with axes and a colour bar, or as float32 data a browser colours itself; a
  result that is one plane already (a solver's monitor: `axis`, `position`) is drawn as is;
- `plot`: 1-D data (a tet mesh's quality histogram, a result's series) as PNG or SVG, and its
  data as JSON.

Every output is a blob, downloaded with `GET /blobs/HASH` from the relay, and cached by the
hash of its inputs (their blobs, the parameters, this service's version): asking again costs
a lookup. Requests are checked against the entity's recorded bounds before any work.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field

from twinstack.services.geometry import ShapeCache, Solids, blob_bytes, chosen_solids
from twinstack.services.project import CALLERS, ProjectService
from twinstack.wire.actions import Call, action
from twinstack.wire.errors import ActionError
from twinstack.wire.runtime import Ports

log = logging.getLogger(__name__)

Vector = tuple[float, float, float]
MAX_PIXELS = 4096  # a picture's side


class Plane(BaseModel):
    model_config = {"extra": "forbid"}

    origin: Vector
    normal: Vector


class SceneParams(BaseModel):
    model_config = {"extra": "forbid"}

    ids: Solids
    tolerance: float | None = Field(None, gt=0, allow_inf_nan=False,
                                    description="largest distance of a triangle from the exact "
                                    "surface (default: 0.1 % of each solid's size)")
    edges: bool = True


class MeshViewParams(BaseModel):
    model_config = {"extra": "forbid"}

    id: str = Field(description="a mesh entity")
    clip: Plane | None = Field(None, description="keep the elements behind this plane "
                               "(normal . (centre - origin) <= 0)")


class SliceParams(BaseModel):
    model_config = {"extra": "forbid"}

    id: str = Field(description="a mesh entity, or a result entity with values on a mesh")
    field: str | None = Field(None, description="a mesh's own field: material or fill "
                              "(Cartesian), region (tetrahedral); a result's values otherwise")
    axis: Literal["x", "y", "z"] | None = None
    position: float | None = Field(None, allow_inf_nan=False)
    plane: Plane | None = Field(None, description="any plane (tetrahedral meshes), instead "
                                "of axis and position")
    format: Literal["png", "data"] = "png"
    cmap: str = Field("viridis", max_length=32)
    vmin: float | None = Field(None, allow_inf_nan=False)
    vmax: float | None = Field(None, allow_inf_nan=False)
    size: tuple[int, int] = Field((800, 600), description="pixels (png)")
    resolution: int = Field(200, ge=10, le=2000, description="samples per side (tetrahedral)")


class PlotParams(BaseModel):
    model_config = {"extra": "forbid"}

    id: str = Field(description="a tetrahedral mesh (its quality) or a result with series")
    format: Literal["png", "svg"] = "png"
    size: tuple[int, int] = (800, 500)


class VisualizationService(ProjectService):
    name: ClassVar[str] = "visualization"
    ports: ClassVar[Ports] = Ports(internal=7500, health=7501)

    async def start(self) -> None:
        await super().start()
        self.shapes = ShapeCache(self.blobs)

    # GLB ------------------------------------------------------------------------------------

    @action(allow=CALLERS)
    async def scene(self, call: Call, params: SceneParams) -> dict[str, Any]:
        """Solids as one GLB: a node per solid, named as it, in its material's colour."""
        _, found = await self._entities()
        solids = chosen_solids(found, params.ids)
        colors = _material_colors(found)
        key = ["scene", [(s["id"], s["name"], s["blobs"], s["properties"].get("material"))
                         for s in solids], params.tolerance, params.edges, colors]
        blob, made = await self._output(key, lambda: self._scene(solids, colors, params))
        return {"blob": blob, "format": "glb", "parts": [s["name"] for s in solids],
                "computed": made}

    def _scene(self, solids: list[dict[str, Any]], colors: dict[str, Any],
               params: SceneParams) -> bytes:
        from twinstack.sim import scene

        parts = []
        for solid in solids:
            vertices, faces = self.shapes.triangles(solid, params.tolerance)
            color = colors.get(solid["properties"].get("material"), scene.DEFAULT_COLOR)
            edges = scene.feature_edges(vertices, faces) if params.edges else None
            parts.append(scene.Part(solid["name"], vertices, faces, color, edges))
        return scene.glb(parts)

    @action(allow=CALLERS)
    async def mesh_view(self, call: Call, params: MeshViewParams) -> dict[str, Any]:
        """A mesh as GLB: its material (Cartesian) or region (tetrahedral) surfaces with their
        element edges, clipped by a plane if asked."""
        mesh = await self._entity(params.id, ("mesh",), "mesh")
        clip = None if params.clip is None else (params.clip.origin, params.clip.normal)
        if params.clip is not None and not any(params.clip.normal):
            raise ActionError(422, "invalid_params", "the clip plane's normal is zero",
                              "params.clip.normal")
        key = ["mesh_view", mesh["blobs"], mesh["properties"].get("materials"),
               mesh["properties"].get("regions"), clip]
        blob, made = await self._output(key, lambda: self._mesh_view(mesh, clip))
        return {"blob": blob, "format": "glb", "computed": made}

    def _mesh_view(self, mesh: dict[str, Any], clip: Any) -> bytes:
        from twinstack.sim import scene

        arrays = self._arrays(mesh)
        props = mesh["properties"]
        if props.get("mesher") == "cartesian":
            names = {m["index"]: m.get("name") or f"material {m['index']}"
                     for m in props["materials"]}
            parts = scene.voxel_surface_parts(arrays["x"], arrays["y"], arrays["z"],
                                              arrays["material"], names, clip=clip)
        else:
            parts = scene.tet_surface_parts(arrays["points"], arrays["tets"], arrays["region"],
                                            [r["name"] for r in props["regions"]], clip=clip)
        return scene.glb(parts)

    def _arrays(self, mesh: dict[str, Any]) -> Any:
        """A mesh entity's arrays (its one .npz blob)."""
        role = "grid" if mesh["properties"].get("mesher") == "cartesian" else "tets"
        digest = mesh["blobs"].get(role)
        if digest is None:
            raise ActionError(422, "invalid_params", f"{mesh['name']} has no mesh data",
                              "params.id")
        return np.load(io.BytesIO(blob_bytes(self.blobs, digest, f"the mesh {mesh['name']}")))

    # slices ---------------------------------------------------------------------------------

    @action(allow=CALLERS)
    async def slice(self, call: Call, params: SliceParams) -> dict[str, Any]:
        """A field cut by a plane: a PNG with axes and a colour bar, or float32 values (a
        blob: little-endian, row-major, `shape` rows of v by columns of u) with their
        coordinates and range, for a browser to colour."""
        entity = await self._entity(params.id, ("mesh", "result"), "mesh or result")
        mesh, field = await self._field_source(entity, params)
        plane = entity["properties"].get("axis")
        if entity["kind"] == "result" and plane is not None:  # a solver's plane: only it
            params = params.model_copy(update={"axis": plane, "position": float(
                entity["properties"]["position"])})
        _check_plane(mesh, params)
        if max(params.size) > MAX_PIXELS or min(params.size) < 100:
            raise ActionError(422, "invalid_params", f"a picture is 100 to {MAX_PIXELS} "
                              "pixels a side", "params.size")
        key = ["slice", mesh["blobs"], entity["blobs"], field,
               params.model_dump(exclude={"id"})]
        if params.format == "png":
            blob, made = await self._output(key, lambda: self._slice_png(mesh, entity, field,
                                                                          params))
            return {"blob": blob, "format": "png", "computed": made}

        def data() -> bytes:  # the values as a blob of their own, the rest as JSON
            from twinstack.sim import figures

            found = figures.slice_data(self._slice(mesh, entity, field, params))
            found["values"] = self.blobs.put(found.pop("values_f32"))
            return json.dumps(found).encode()
        blob, made = await self._output(key, data)
        meta = json.loads(await asyncio.to_thread(self.blobs.get, blob))
        await self._model("keep_blobs", blobs=[meta["values"]])
        return {"blob": meta.pop("values"), "format": "float32", "computed": made, **meta}

    async def _field_source(self, entity: dict[str, Any], params: SliceParams
                            ) -> tuple[dict[str, Any], str]:
        """The mesh a field lives on, and the field's name."""
        if entity["kind"] == "mesh":
            own = ("material", "fill") if entity["properties"].get("mesher") == "cartesian" \
                else ("region",)
            field = params.field or own[0]
            if field not in own:
                raise ActionError(422, "invalid_params", f"{entity['name']} has the fields "
                                  f"{', '.join(own)}, not {field!r}", "params.field")
            return entity, field
        mesh_id = entity["properties"].get("mesh")
        if not isinstance(mesh_id, str) or "values" not in entity["blobs"]:
            raise ActionError(422, "invalid_params", f"{entity['name']} holds no values on a "
                              "mesh", "params.id")
        mesh = await self._entity(mesh_id, ("mesh",), "mesh")
        return mesh, str(entity["properties"].get("field", entity["name"]))

    def _slice(self, mesh: dict[str, Any], entity: dict[str, Any], field: str,
               params: SliceParams) -> Any:
        from twinstack.sim import figures

        arrays = self._arrays(mesh)
        unit = str(entity["properties"].get("unit", ""))
        if entity is mesh:
            values = arrays[field]
        else:
            values = np.load(io.BytesIO(blob_bytes(self.blobs, entity["blobs"]["values"],
                                                   f"the values of {entity['name']}")))
        try:
            if mesh["properties"].get("mesher") == "cartesian":
                if params.axis is None or params.position is None:
                    raise ActionError(422, "invalid_params", "a Cartesian mesh is cut along "
                                      "an axis: give axis and position", "params.axis")
                return figures.cartesian_slice(arrays["x"], arrays["y"], arrays["z"], values,
                                               params.axis, params.position, name=field,
                                               unit=unit)
            origin, normal = _plane(params)
            return figures.tet_slice(arrays["points"], arrays["tets"], values, origin, normal,
                                     resolution=params.resolution, name=field, unit=unit)
        except figures.SliceError as exc:
            raise ActionError(422, "outside_domain", str(exc), "params.position") from exc
        except ValueError as exc:
            raise ActionError(422, "invalid_params", str(exc), "params") from exc

    def _slice_png(self, mesh: dict[str, Any], entity: dict[str, Any], field: str,
                   params: SliceParams) -> bytes:
        from twinstack.sim import figures

        cut = self._slice(mesh, entity, field, params)
        try:
            return figures.slice_png(cut, cmap=params.cmap, vmin=params.vmin,
                                     vmax=params.vmax, size=params.size)
        except (KeyError, ValueError) as exc:
            raise ActionError(422, "invalid_params", str(exc), "params.cmap") from exc

    # plots ----------------------------------------------------------------------------------

    @action(allow=CALLERS)
    async def plot(self, call: Call, params: PlotParams) -> dict[str, Any]:
        """1-D data as a picture, with the data: a tetrahedral mesh's radius-ratio histogram,
        or a result's series (`series` blob: .npz of x0, y0, x1, y1 ...)."""
        entity = await self._entity(params.id, ("mesh", "result"), "mesh or result")
        props = entity["properties"]
        if max(params.size) > MAX_PIXELS or min(params.size) < 100:
            raise ActionError(422, "invalid_params", f"a picture is 100 to {MAX_PIXELS} "
                              "pixels a side", "params.size")
        if entity["kind"] == "mesh":
            quality = props.get("quality")
            if not quality:
                raise ActionError(422, "invalid_params", f"{entity['name']} has no quality "
                                  "statistics (a tetrahedral mesh has)", "params.id")
            histogram = quality["radius_ratio"]["histogram"]
            data = {"kind": "histogram", "x_label": "radius ratio (3 r_in / R_circ)",
                    "edges": histogram["edges"], "counts": histogram["counts"],
                    "title": f"{entity['name']}: {quality['tets']:,} tetrahedra, min "
                             f"dihedral angle {quality['min_dihedral_deg']:.1f}°"}
        elif "series" in entity["blobs"]:
            data = await self._compute(self._series, entity)
        else:
            raise ActionError(422, "invalid_params", f"{entity['name']} has nothing to plot",
                              "params.id")
        key = ["plot", entity["blobs"], data, params.format, params.size]
        blob, made = await self._output(key, lambda: _draw(data, params))
        return {"blob": blob, "format": params.format, "computed": made, "data": data}

    def _series(self, entity: dict[str, Any]) -> dict[str, Any]:
        props = entity["properties"]
        arrays = np.load(io.BytesIO(blob_bytes(self.blobs, entity["blobs"]["series"],
                                               f"the series of {entity['name']}")))
        labels = list(props.get("labels", []))
        series = []
        for n in range(len([k for k in arrays.files if k.startswith("y")])):
            series.append({"label": labels[n] if n < len(labels) else "",
                           "x": arrays[f"x{n}"].tolist(), "y": arrays[f"y{n}"].tolist()})
        return {"kind": "line", "series": series, "x_label": props.get("x_label", ""),
                "y_label": props.get("y_label", ""), "title": props.get("title", "")}


def _draw(data: dict[str, Any], params: PlotParams) -> bytes:
    from twinstack.sim import figures

    if data["kind"] == "histogram":
        return figures.histogram_plot(np.asarray(data["edges"]), np.asarray(data["counts"]),
                                      x_label=data["x_label"], title=data["title"],
                                      format=params.format, size=params.size)
    try:
        return figures.plot([figures.Series(s["label"], np.asarray(s["x"]), np.asarray(s["y"]))
                             for s in data["series"]], x_label=data["x_label"],
                            y_label=data["y_label"], title=data["title"],
                            format=params.format, size=params.size)
    except ValueError as exc:
        raise ActionError(422, "invalid_params", str(exc), "params.id") from exc


def _plane(params: SliceParams) -> tuple[Vector, Vector]:
    """The cutting plane: given, or the one normal to `axis` at `position`."""
    if params.plane is not None:
        return params.plane.origin, params.plane.normal
    if params.axis is None or params.position is None:
        raise ActionError(422, "invalid_params", "give a plane, or axis and position",
                          "params.plane")
    a = "xyz".index(params.axis)
    origin = [0.0, 0.0, 0.0]
    origin[a] = params.position
    normal = [0.0, 0.0, 0.0]
    normal[a] = 1.0
    return (origin[0], origin[1], origin[2]), (normal[0], normal[1], normal[2])


def _check_plane(mesh: dict[str, Any], params: SliceParams) -> None:
    """422 before any work for a plane that misses the mesh's bounding box."""
    bounds = mesh["properties"].get("bounds")
    if bounds is None:
        return
    lo, hi = np.asarray(bounds, dtype=float)
    if params.plane is None and params.axis is not None and params.position is not None:
        a = "xyz".index(params.axis)
        if not lo[a] <= params.position <= hi[a]:
            raise ActionError(422, "outside_domain", f"{params.axis} = {params.position:g} "
                              f"is outside the mesh: {params.axis} in [{lo[a]:g}, {hi[a]:g}]",
                              "params.position")
        return
    origin, normal = _plane(params)
    n = np.asarray(normal, dtype=float)
    if not n.any():
        raise ActionError(422, "invalid_params", "the plane's normal is zero",
                          "params.plane.normal")
    corners = np.array([[(lo, hi)[i >> k & 1][k] for k in range(3)] for i in range(8)])
    side = (corners - np.asarray(origin, dtype=float)) @ n
    if side.min() > 0 or side.max() < 0:
        raise ActionError(422, "outside_domain", "the plane misses the mesh (its bounds are "
                          f"{lo.tolist()} to {hi.tolist()})", "params.plane")


def _material_colors(entities: list[dict[str, Any]]) -> dict[str, Any]:
    """A colour per material entity: its own `color` property, else one of the palette in
    the order materials were made."""
    from twinstack.sim import scene

    colors: dict[str, Any] = {}
    materials = [e for e in entities if e["kind"] == "material"]
    for n, material in enumerate(materials):
        own = material["properties"].get("color")
        colors[material["id"]] = tuple(own) if isinstance(own, list) and len(own) == 4 \
            else scene.PALETTE[n % len(scene.PALETTE)]
    return colors
