"""The tet-mesh service: tetrahedral meshes of the model's solids on netgen (sim/tetmesh).

A mesh is an entity (kind `mesh`, mesher `tetrahedral`): one physical group per solid (named
after it, with its material), conforming across shared faces, later solids winning overlaps.
Its arrays (points, tets, regions, boundary triangles) are one `.npz` blob (role `tets`);
its quality (dihedral angles, the radius-ratio histogram) is in its properties. `export`
writes VTU, Gmsh MSH, Abaqus INP or Netgen VOL files as blobs.

This process never loads the CAD kernel (OCP): netgen brings its own OpenCascade, and the two
cannot share a process. Solids come as B-rep blobs written by the modeling service.
"""

from __future__ import annotations

import io
import logging
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field

from twinstack.services.geometry import BREP, Solids, blob_bytes, chosen_solids, only_solids
from twinstack.services.project import CALLERS, ProjectService
from twinstack.wire.actions import Call, action
from twinstack.wire.errors import ActionError
from twinstack.wire.runtime import Ports

log = logging.getLogger(__name__)

Vector = tuple[float, float, float]


class BallRefinement(BaseModel):
    model_config = {"extra": "forbid"}

    center: Vector
    radius: float = Field(gt=0, allow_inf_nan=False)
    maxh: float = Field(gt=0, allow_inf_nan=False, description="the largest element inside")


class TetParams(BaseModel):
    model_config = {"extra": "forbid"}

    solids: Solids
    maxh: float = Field(gt=0, allow_inf_nan=False, description="the largest element size")
    sizes: dict[str, float] = Field({}, description="solid id -> its own largest element size")
    refinements: list[BallRefinement] = Field([], max_length=1000)
    grading: float = Field(0.3, gt=0, le=1, description="how fast elements grow (netgen)")
    curvature_safety: float | None = Field(None, gt=0, le=100, description="elements per "
                                           "radius of curvature on curved faces (netgen: 2)")
    name: str | None = Field(None, min_length=1, max_length=256)


class ExportParams(BaseModel):
    model_config = {"extra": "forbid"}

    id: str
    format: Literal["vtu", "msh", "abaqus", "netgen"]


class TetMeshService(ProjectService):
    name: ClassVar[str] = "tet-mesh"
    ports: ClassVar[Ports] = Ports(internal=7490, health=7491)

    def _max_tets(self) -> int:
        from twinstack.sim import tetmesh

        return min(tetmesh.MAX_TETS,
                   self.settings.compute_memory_mb * 2**20 // tetmesh.BYTES_PER_TET)

    @action(allow=CALLERS)
    async def create(self, call: Call, params: TetParams) -> dict[str, Any]:
        """Mesh solids into a new mesh entity (refused before meshing when too large)."""
        author = self._editor(call)

        async def attempt() -> dict[str, Any]:
            state, found = await self._entities()
            solids = _chosen(found, params)
            digest, summary = await self._compute(self._mesh, solids, params)
            name = params.name or f"tet mesh {summary['tets']:,}"
            properties = {"mesher": "tetrahedral", "solids": [s["id"] for s in solids],
                          "parameters": params.model_dump(exclude={"name", "solids"}),
                          **summary}
            result = await self._commit(
                author, f"{name}: {summary['tets']:,} tetrahedra of {len(solids)} "
                f"solid{'s' * (len(solids) != 1)}", state,
                creates=[{"kind": "mesh", "name": name, "properties": properties,
                          "blobs": {"tets": digest}}])
            return {"id": result["ids"][0], "name": name, "head": result["head"], **summary}
        return dict(await self._retrying(attempt))

    def _mesh(self, solids: list[dict[str, Any]], params: TetParams
              ) -> tuple[str, dict[str, Any]]:
        from twinstack.sim import tetmesh

        regions = [tetmesh.Region(s["name"], blob_bytes(self.blobs, s["blobs"][BREP],
                                                        f"the shape {s['name']}"),
                                  s["properties"].get("material"), params.sizes.get(s["id"]))
                   for s in solids]
        try:
            mesh = tetmesh.mesh_solids(
                regions, params.maxh, grading=params.grading,
                curvature_safety=params.curvature_safety, max_tets=self._max_tets(),
                refinements=[tetmesh.Refinement(r.center, r.radius, r.maxh)
                             for r in params.refinements])
        except tetmesh.MeshingError as exc:
            raise ActionError(422, "invalid_mesh", str(exc), "params.maxh") from exc
        out = io.BytesIO()
        np.savez_compressed(out, points=mesh.points, tets=mesh.tets, region=mesh.region,
                            boundary=mesh.boundary, boundary_region=mesh.boundary_region)
        quality = mesh.quality()
        return self.blobs.put(out.getvalue()), {
            "tets": quality["tets"], "points": quality["points"], "quality": quality,
            "volume": mesh.volume(),
            "bounds": [mesh.points.min(axis=0).tolist(), mesh.points.max(axis=0).tolist()],
            "regions": [{"name": n, "solid": s["id"], "material": m,
                         "volume": mesh.region_volumes()[n]}
                        for n, s, m in zip(mesh.regions, solids, mesh.materials, strict=True)]}

    @action(allow=CALLERS)
    async def export(self, call: Call, params: ExportParams) -> dict[str, Any]:
        """A tet mesh as a VTU, MSH (Gmsh 2.2, physical groups), Abaqus INP or Netgen VOL file:
        a blob to download."""
        entity = await self._entity(params.id, ("mesh",), "mesh")
        digest = entity["blobs"].get("tets")
        if digest is None:
            raise ActionError(422, "invalid_params", f"{entity['name']} is not a tetrahedral "
                              "mesh", "params.id")
        blob, made = await self._output(
            ["export", digest, params.format, entity["properties"]["regions"]],
            lambda: _load(self.blobs.get(digest), entity).write(params.format))
        return {"blob": blob, "format": params.format, "computed": made}


def _chosen(found: list[dict[str, Any]], params: TetParams) -> list[dict[str, Any]]:
    """The solids to mesh, checked: exact solids (not imported meshes), sizes only theirs."""
    solids = chosen_solids(found, params.solids)
    only_solids(params.sizes, solids, "sizes")
    for solid in solids:
        if solid["properties"].get("representation", BREP) != BREP:
            raise ActionError(422, "invalid_params", f"{solid['name']} is an imported triangle "
                              "mesh: tetrahedral meshing needs exact solids (import STEP)",
                              "params.solids")
    bad = [v for v in params.sizes.values() if not v > 0]
    if bad:
        raise ActionError(422, "invalid_params", f"element sizes must be positive, not "
                          f"{bad[0]}", "params.sizes")
    return solids


def _load(data: bytes, entity: dict[str, Any]) -> Any:
    """A stored tet mesh back as sim.tetmesh.TetMesh."""
    from twinstack.sim import tetmesh

    arrays = np.load(io.BytesIO(data))
    regions = entity["properties"]["regions"]
    return tetmesh.TetMesh(arrays["points"], arrays["tets"], arrays["region"],
                           [r["name"] for r in regions], [r["material"] for r in regions],
                           arrays["boundary"], arrays["boundary_region"])
