"""The cartesian-mesh service: the model's solids on a Cartesian (Yee) grid (sim/voxel).

A mesh is an entity (kind `mesh`, mesher `cartesian`) that records what it was made from and
how: the solids, their materials, the cell sizes. Its arrays — grid lines, the material index
of every cell, the fill fraction of boundary cells, the PEC edges — are one `.npz` blob (role
`grid`). The grid spans the solids' bounding box (plus `padding`); unless told otherwise its
lines lie on the faces of every solid's bounding box, so boxes fill whole cells.

Materials are numbered 1, 2, ... in the order the solids are given (0 is the background); a
solid without a material gets one index of its own. Where solids overlap, a cell takes the
material of the highest-priority solid that covers at least half of it; among equal
priorities the later solid in the list wins (sim/voxel's rule).

The grid size is checked before any work: a request whose cells would need more memory than
the service's budget (`compute_memory_mb`) is refused with the estimate.
"""

from __future__ import annotations

import io
import logging
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field

from twinstack.services.geometry import ShapeCache, Solids, chosen_solids, only_solids
from twinstack.services.project import CALLERS, ProjectService
from twinstack.wire.actions import Call, action
from twinstack.wire.errors import ActionError
from twinstack.wire.runtime import Ports

log = logging.getLogger(__name__)

Vector = tuple[float, float, float]


class BoxRefinement(BaseModel):
    model_config = {"extra": "forbid"}

    lo: Vector
    hi: Vector
    cell: float = Field(gt=0, allow_inf_nan=False, description="the largest cell inside")


class CartesianParams(BaseModel):
    model_config = {"extra": "forbid"}

    solids: Solids
    cell: float | Vector = Field(description="the largest cell size (one, or per axis)")
    padding: float = Field(0.0, ge=0, allow_inf_nan=False,
                           description="space around the solids' bounding box")
    refinements: list[BoxRefinement] = Field([], max_length=100,
                                             description="boxes meshed with finer cells")
    snap: bool = Field(True, description="grid lines on every solid's bounding-box faces")
    max_ratio: float = Field(1.5, gt=1, le=4, description="largest size ratio of neighbours")
    samples: int = Field(2, ge=1, le=8, description="rays per cell side for fill fractions "
                         "(2: 1e-5 volume error on a 200^3 grid, faster than VTK; 4: 3e-6)")
    priorities: dict[str, int] = Field({}, description="solid id -> priority in overlaps "
                                       "(default 0)")
    name: str | None = Field(None, min_length=1, max_length=256)


class CartesianMeshService(ProjectService):
    name: ClassVar[str] = "cartesian-mesh"
    ports: ClassVar[Ports] = Ports(internal=7480, health=7481)

    async def start(self) -> None:
        await super().start()
        self.shapes = ShapeCache(self.blobs)

    def _budget(self) -> int:
        return self.settings.compute_memory_mb * 2**20

    @action(allow=CALLERS)
    async def estimate(self, call: Call, params: CartesianParams) -> dict[str, Any]:
        """The grid a `create` with these parameters would make: cells and memory."""
        solids, _, _ = await self._solids(params)
        grid = self._grid(params, [s["properties"]["bbox"] for s in solids])
        return self._size(grid, len(solids))

    def _size(self, grid: Any, bodies: int) -> dict[str, Any]:
        from twinstack.sim import voxel

        return {"shape": list(grid.shape), "cells": grid.cells,
                "bytes": voxel.estimate_bytes(grid, bodies), "budget_bytes": self._budget()}

    @action(allow=CALLERS)
    async def create(self, call: Call, params: CartesianParams) -> dict[str, Any]:
        """Voxelize solids into a new mesh entity (refused before any work when too large)."""
        author = self._editor(call)

        async def attempt() -> dict[str, Any]:
            solids, materials, state = await self._solids(params)
            grid = self._grid(params, [s["properties"]["bbox"] for s in solids])
            size = self._size(grid, len(solids))
            if size["bytes"] > size["budget_bytes"]:
                raise ActionError(422, "too_large", f"a grid of {grid.cells:,} cells "
                                  f"({' x '.join(map(str, grid.shape))}) needs about "
                                  f"{size['bytes'] / 2**20:,.0f} MiB, over this service's "
                                  f"{self.settings.compute_memory_mb:,} MiB "
                                  "(compute_memory_mb): use larger cells", "params.cell")
            table = _materials(solids, materials)
            digest, summary = await self._compute(self._voxelize, grid, solids, table, params)
            name = params.name or f"cartesian mesh {grid.shape[0]}x{grid.shape[1]}x" \
                f"{grid.shape[2]}"
            properties = {"mesher": "cartesian", "solids": [s["id"] for s in solids],
                          "materials": table, "parameters": params.model_dump(
                              exclude={"name", "solids"}), **summary}
            result = await self._commit(author, f"{name}: {grid.cells:,} cells from "
                                        f"{len(solids)} solid{'s' * (len(solids) != 1)}",
                                        state, creates=[{"kind": "mesh", "name": name,
                                                         "properties": properties,
                                                         "blobs": {"grid": digest}}])
            return {"id": result["ids"][0], "name": name, "head": result["head"], **summary}
        return dict(await self._retrying(attempt))

    async def _solids(self, params: CartesianParams
                      ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], int | None]:
        """The solids to mesh, the model's materials by id, and the state they are from."""
        state, found = await self._entities()
        solids = chosen_solids(found, params.solids)
        only_solids(params.priorities, solids, "priorities")
        return solids, {e["id"]: e for e in found if e["kind"] == "material"}, state

    @staticmethod
    def _grid(params: CartesianParams, boxes: list[list[list[float]]]) -> Any:
        from twinstack.sim import voxel

        lo = np.min([b[0] for b in boxes], axis=0) - params.padding
        hi = np.max([b[1] for b in boxes], axis=0) + params.padding
        cells = (params.cell,) * 3 if isinstance(params.cell, float | int) else params.cell
        axes = []
        try:
            for a in range(3):
                snap = [b[side][a] for b in boxes for side in (0, 1)] if params.snap else []
                refine = [(r.lo[a], r.hi[a], r.cell) for r in params.refinements]
                axes.append(voxel.axis_lines(float(lo[a]), float(hi[a]), float(cells[a]),
                                             refinements=refine, snap=snap,
                                             max_ratio=params.max_ratio))
            return voxel.Grid(*axes)
        except voxel.GridError as exc:
            raise ActionError(422, "invalid_grid", str(exc), "params.cell") from exc

    def _voxelize(self, grid: Any, solids: list[dict[str, Any]], table: list[dict[str, Any]],
                  params: CartesianParams) -> tuple[str, dict[str, Any]]:
        """Triangulate the solids (finer than the cells) and voxelize them (compute thread)."""
        from twinstack.sim import voxel

        index = {m["material"]: m["index"] for m in table}
        pec = {m["index"] for m in table if m["pec"]}
        smallest = float(min(np.diff(grid.x).min(), np.diff(grid.y).min(),
                             np.diff(grid.z).min()))
        bodies = []
        for solid in solids:
            vertices, faces = self.shapes.triangles(solid, _tolerance(solid, smallest))
            material = index[solid["properties"].get("material") or solid["id"]]
            bodies.append(voxel.Body(vertices, faces, material,
                                     params.priorities.get(solid["id"], 0), material in pec))
        try:
            voxels = voxel.voxelize(grid, bodies, samples=params.samples)
        except voxel.GridError as exc:
            raise ActionError(422, "invalid_grid", str(exc), "params") from exc
        out = io.BytesIO()
        np.savez_compressed(out, x=grid.x, y=grid.y, z=grid.z, material=voxels.material,
                            fill=voxels.fill, pec_x=voxels.pec_edges[0],
                            pec_y=voxels.pec_edges[1], pec_z=voxels.pec_edges[2])
        volumes = voxels.material_volumes()
        return self.blobs.put(out.getvalue()), {
            "shape": list(grid.shape), "cells": grid.cells,
            "bounds": [[float(a[0]) for a in (grid.x, grid.y, grid.z)],
                       [float(a[-1]) for a in (grid.x, grid.y, grid.z)]],
            "smallest_cell": smallest, "volume": voxels.volume(),
            "material_volumes": {str(k): v for k, v in volumes.items()},
            "pec_edges": int(sum(int(e.sum()) for e in voxels.pec_edges))}


def _materials(solids: list[dict[str, Any]], materials: dict[str, dict[str, Any]]
               ) -> list[dict[str, Any]]:
    """Material indices 1, 2, ... in the order solids name them; a solid without a material
    gets an index of its own (`material` is then the solid's id, `name` null)."""
    table: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for solid in solids:
        key = solid["properties"].get("material") or solid["id"]
        if key not in seen:
            seen[key] = len(table) + 1
            found = materials.get(key)
            table.append({"index": seen[key], "material": key,
                          "name": found["name"] if found else None,
                          "pec": bool(found and found["properties"].get("pec"))})
    return table


def _tolerance(solid: dict[str, Any], cell: float) -> float:
    """Triangles within 1/50 of the smallest cell, but not finer than the kernel allows."""
    lo, hi = np.asarray(solid["properties"]["bbox"], dtype=float)
    return max(cell / 50, float(np.linalg.norm(hi - lo)) * 2e-5)
