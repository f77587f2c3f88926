"""The modeling service: exact CAD (OpenCascade, numerics in sim/cad) on a project's model.

Every shape is a geometry entity that records how it was made: its feature (sphere, union,
fillet ...), the feature's parameters and the entities it was made from. Its B-rep is a blob
(by hash) and its volume, area, bounding box and centre of mass are properties. Changing a
parameter rebuilds the entity and everything built from it, in dependency order, as one new
state. Imported meshes (STL/OBJ) are geometry too, kept as triangle meshes: booleans with one
of them are mesh booleans (manifold3d, sim/meshbool).

The service reads entities from the session's model service and writes through it (blobs put
first); it checks that the caller may edit before it computes anything. OpenCascade is not
thread-safe: one compute thread runs every kernel call, one call at a time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import functools
import logging
import uuid
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from twinstack.exitcodes import ExitCode, FatalError
from twinstack.services.geometry import BREP, MESH, Shape, ShapeCache, default_tolerance
from twinstack.services.project import CALLERS, ProjectService
from twinstack.store.blobs import is_sha256
from twinstack.wire.actions import Call, action
from twinstack.wire.errors import ActionError
from twinstack.wire.runtime import NoParams, Ports

log = logging.getLogger(__name__)

SHAPE_CACHE = 64  # shapes kept in memory by blob hash (a blob never changes)

# A small library of materials (relative permittivity, relative permeability, conductivity in
# S/m; `pec` for a perfect conductor: JSON has no infinity), assigned by name; a user's own
# materials are entities like these.
MATERIALS: dict[str, dict[str, float]] = {
    "vacuum": {"epsilon_r": 1.0, "mu_r": 1.0, "sigma": 0.0},
    "air": {"epsilon_r": 1.00059, "mu_r": 1.0, "sigma": 0.0},
    "PEC": {"epsilon_r": 1.0, "mu_r": 1.0, "sigma": 0.0, "pec": True},
    "copper": {"epsilon_r": 1.0, "mu_r": 0.999994, "sigma": 5.96e7},
    "aluminium": {"epsilon_r": 1.0, "mu_r": 1.000022, "sigma": 3.77e7},
    "FR-4": {"epsilon_r": 4.4, "mu_r": 1.0, "sigma": 0.0},
    "PTFE": {"epsilon_r": 2.1, "mu_r": 1.0, "sigma": 0.0},
    "glass": {"epsilon_r": 6.0, "mu_r": 1.0, "sigma": 1e-12},
    "water": {"epsilon_r": 80.1, "mu_r": 0.999992, "sigma": 5.5e-6},
    "silicon": {"epsilon_r": 11.7, "mu_r": 1.0, "sigma": 4.35e-4},
}


class CreateParams(BaseModel):
    model_config = {"extra": "forbid"}

    feature: str = Field(description="a primitive, transform, boolean, fillet or chamfer "
                         "(see `features`)")
    parameters: dict[str, Any] = {}
    inputs: list[str] = Field([], max_length=2, description="entity ids it is made from")
    name: str | None = Field(None, min_length=1, max_length=256)
    parent: str | None = Field(None, description="the folder to put it in")


class SetParametersParams(BaseModel):
    model_config = {"extra": "forbid"}

    id: str
    parameters: dict[str, Any] = Field(description="the parameters to change; others keep "
                                       "their value")


class ImportParams(BaseModel):
    model_config = {"extra": "forbid"}

    format: Literal["step", "brep", "stl", "obj"]
    data: str | None = Field(None, description="the file, base64-encoded")
    blob: str | None = Field(None, description="or the hash of a blob already stored")
    name: str = Field(min_length=1, max_length=256)
    parent: str | None = None


class ExportParams(BaseModel):
    model_config = {"extra": "forbid"}

    id: str
    format: Literal["step", "brep", "stl", "glb"]
    tolerance: float | None = Field(None, gt=0, description="largest distance of a triangle "
                                    "from the exact surface (stl, glb; default: 0.1 % of the "
                                    "shape's size)")


class EntityRef(BaseModel):
    model_config = {"extra": "forbid"}

    id: str


class MaterialParams(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=256)
    epsilon_r: float = Field(1.0, ge=1.0, description="relative permittivity")
    mu_r: float = Field(1.0, gt=0.0, description="relative permeability")
    sigma: float = Field(0.0, ge=0.0, allow_inf_nan=False, description="conductivity, S/m")
    pec: bool = Field(False, description="a perfect electric conductor (sigma is then unused)")


class AssignParams(BaseModel):
    model_config = {"extra": "forbid"}

    ids: list[str] = Field(min_length=1, max_length=10_000)
    material: str = Field(description="a material entity's id, or a library material's name "
                          "(added to the model on first use)")


def _invalid(exc: Exception, field: str = "params.parameters") -> ActionError:
    return ActionError(422, "invalid_geometry", str(exc), field)


def _decode(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ActionError(422, "invalid_params", f"data is not base64: {exc}",
                          "params.data") from exc


def dependants(geometry: dict[str, dict[str, Any]], changed: str) -> list[str]:
    """`changed` and every entity built from it, each after all of its inputs."""
    users: dict[str, list[str]] = collections.defaultdict(list)
    for entity_id, entity in geometry.items():
        for source in entity["properties"].get("inputs", []):
            users[source].append(entity_id)
    affected: set[str] = set()
    stack = [changed]
    while stack:
        entity_id = stack.pop()
        if entity_id not in affected:
            affected.add(entity_id)
            stack.extend(users.get(entity_id, ()))
    waiting = {e: sum(1 for s in geometry[e]["properties"].get("inputs", []) if s in affected)
               for e in affected}
    ready = [changed]
    order: list[str] = []
    while ready:
        entity_id = ready.pop()
        order.append(entity_id)
        for user in sorted(users.get(entity_id, ())):
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    return order


class ModelingService(ProjectService):
    name: ClassVar[str] = "modeling"
    ports: ClassVar[Ports] = Ports(internal=7470, health=7471)

    @staticmethod
    def warm_up() -> None:
        _warm_up()

    async def start(self) -> None:
        await super().start()
        try:
            await self._compute(_warm_up)
        except ImportError as exc:
            raise FatalError(ExitCode.CONFIG_ERROR, f"modeling needs the CAD kernel (pip "
                             f"install 'twinstack[cad]'): {exc}") from exc
        self.shapes = ShapeCache(self.blobs, SHAPE_CACHE)

    # shapes -----------------------------------------------------------------------------------

    def _store(self, shape: Shape) -> tuple[dict[str, Any], dict[str, str]]:
        """Put a shape's data in the blob store; its derived properties and blob roles."""
        if shape.representation == BREP:
            digest = self.blobs.put(shape.value.to_brep())
            derived = shape.value.properties()
        else:
            digest = self.blobs.put(shape.value.to_stl())
            derived = _mesh_properties(shape.value)
        self.shapes.remember(digest, shape)
        return {"representation": shape.representation, **derived}, \
            {shape.representation: digest}

    def _evaluate(self, feature: str, parameters: dict[str, Any],
                  inputs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
        """Build one feature from its input entities (compute thread)."""
        from twinstack.sim import cad, meshbool

        shapes = [self.shapes.get(e) for e in inputs]
        try:
            if any(s.representation == MESH for s in shapes):
                if feature not in ("union", "difference", "intersection") or parameters:
                    raise cad.GeometryError(f"{feature} works on exact solids; of imported "
                                            "meshes only union, difference and intersection "
                                            "can be made")
                meshes = [s.value if s.representation == MESH else meshbool.Mesh.from_arrays(
                    *s.value.triangles(default_tolerance(s.value))) for s in shapes]
                built = Shape(MESH, meshbool.mesh_boolean(feature, meshes[0], meshes[1]))
            else:
                built = Shape(BREP, cad.build(feature, parameters, [s.value for s in shapes]))
        except cad.GeometryError as exc:
            raise _invalid(exc) from exc
        return self._store(built)

    # actions ----------------------------------------------------------------------------------

    @action(allow=CALLERS)
    async def features(self, call: Call, params: NoParams) -> dict[str, Any]:
        """What can be built: each feature's inputs and parameters with their defaults, and
        the material library."""
        from twinstack.sim import cad

        return {"features": {name: {"inputs": f.inputs, "parameters": f.parameters,
                                    "description": f.description}
                             for name, f in cad.FEATURES.items()},
                "materials": MATERIALS}

    @action(allow=CALLERS)
    async def create(self, call: Call, params: CreateParams) -> dict[str, Any]:
        """Build a feature (a primitive, or from other shapes) as a new geometry entity."""
        from twinstack.sim import cad

        author = self._editor(call)
        feature = cad.FEATURES.get(params.feature)
        if feature is None:
            raise ActionError(422, "invalid_params", f"unknown feature {params.feature!r}; "
                              f"features: {', '.join(cad.FEATURES)}", "params.feature")
        if len(params.inputs) != feature.inputs:
            raise ActionError(422, "invalid_params", f"{params.feature} is made from "
                              f"{feature.inputs} shape{'s' if feature.inputs != 1 else ''}, "
                              f"not {len(params.inputs)}", "params.inputs")

        async def attempt() -> dict[str, Any]:
            if params.name is None:  # one read: the inputs and the names taken
                state, found = await self._entities()
            elif params.inputs:
                state, found = await self._entities(params.inputs)
            else:  # a named primitive depends on nothing in the model
                state, found = None, []
            by_id = {e["id"]: e for e in found}
            missing = [i for i in params.inputs if i not in by_id]
            if missing:
                raise ActionError(404, "not_found", f"no entity {', '.join(missing)} in the "
                                  "model", "params.inputs")
            inputs = [by_id[i] for i in params.inputs]
            derived, blobs = await self._compute(self._evaluate, params.feature,
                                                 params.parameters, inputs)
            name = params.name or _free_name(params.feature, found)
            description = f"{name}: " + feature.describe(params.parameters,
                                                         [e["name"] for e in inputs])
            result = await self._commit(author, description, state, creates=[{
                "kind": "geometry", "name": name, "parent": params.parent, "blobs": blobs,
                "properties": {"feature": params.feature, "parameters": params.parameters,
                               "inputs": params.inputs, **derived}}])
            return {"id": result["ids"][0], "name": name, "properties": derived,
                    "head": result["head"]}
        return dict(await self._retrying(attempt))

    @action(allow=CALLERS)
    async def set_parameters(self, call: Call, params: SetParametersParams) -> dict[str, Any]:
        """Change a feature's parameters and rebuild everything made from it, as one state."""
        author = self._editor(call)

        async def attempt() -> dict[str, Any]:
            state, found = await self._entities()
            geometry = {e["id"]: e for e in found if e["kind"] == "geometry"}
            target = geometry.get(params.id)
            if target is None:
                raise ActionError(404, "not_found", f"no shape {params.id} in the model",
                                  "params.id")
            props = target["properties"]
            if props.get("feature") in (None, "import"):
                raise ActionError(422, "invalid_params", f"{target['name']} was imported: it "
                                  "has no parameters to change", "params.id")
            parameters = {**props.get("parameters", {}), **params.parameters}
            updates = await self._compute(self._rebuild, geometry, params.id, parameters)
            changed = ", ".join(f"{k}={v}" for k, v in params.parameters.items())
            more = len(updates) - 1
            description = f"{target['name']}: {changed}" + (
                f" (rebuilt {more} dependant{'s' if more != 1 else ''})" if more else "")
            result = await self._commit(author, description, state, updates=updates)
            return {"rebuilt": [u["id"] for u in updates], "head": result["head"]}
        return dict(await self._retrying(attempt))

    def _rebuild(self, geometry: dict[str, dict[str, Any]], changed: str,
                 parameters: dict[str, Any]) -> list[dict[str, Any]]:
        """New versions of `changed` (with `parameters`) and of everything built from it."""
        current = {k: {**v, "properties": dict(v["properties"]), "blobs": dict(v["blobs"])}
                   for k, v in geometry.items()}
        current[changed]["properties"]["parameters"] = parameters
        updates = []
        for entity_id in dependants(current, changed):
            entity = current[entity_id]
            props = entity["properties"]
            missing = [i for i in props.get("inputs", []) if i not in current]
            if missing:
                raise ActionError(409, "missing_input", f"{entity['name']} is made from "
                                  f"{', '.join(missing)}, which is no longer in the model: it "
                                  "cannot be rebuilt")
            derived, blobs = self._evaluate(props["feature"], props.get("parameters", {}),
                                            [current[i] for i in props.get("inputs", [])])
            entity["properties"].update(derived)
            entity["blobs"] = blobs
            update: dict[str, Any] = {"id": entity_id, "properties": derived, "blobs": blobs}
            if entity_id == changed:
                update["properties"] = {**derived, "parameters": parameters}
            updates.append(update)
        return updates

    @action(allow=CALLERS)
    async def import_file(self, call: Call, params: ImportParams) -> dict[str, Any]:
        """A STEP or BREP file as an exact solid, or an STL or OBJ mesh (closed and manifold)
        as a triangle mesh; the file itself is kept as the entity's `source` blob."""
        author = self._editor(call)
        if (params.data is None) == (params.blob is None):
            raise ActionError(422, "invalid_params", "give exactly one of data (base64) or "
                              "blob (a hash)", "params")
        if params.blob is not None:
            if not is_sha256(params.blob) or not self.blobs.exists(params.blob):
                raise ActionError(404, "not_found", f"no blob {params.blob}", "params.blob")
            source = self.blobs.get(params.blob)
        else:
            source = _decode(params.data or "")
        derived, blobs = await self._compute(self._read_file, params.format, source)
        result = await self._commit(author, f"import {params.format.upper()} as "
                                    f"{params.name}", None, creates=[{
                                        "kind": "geometry", "name": params.name,
                                        "parent": params.parent, "blobs": blobs,
                                        "properties": {"feature": "import",
                                                       "parameters": {"format": params.format},
                                                       "inputs": [], **derived}}])
        return {"id": result["ids"][0], "properties": derived, "head": result["head"]}

    def _read_file(self, kind: str, data: bytes) -> tuple[dict[str, Any], dict[str, str]]:
        from twinstack.sim import cad, meshbool

        try:
            if kind in ("step", "brep"):
                shape = Shape(BREP, cad.Solid.from_step(data) if kind == "step"
                              else cad.Solid.from_brep(data))
            else:
                mesh = meshbool.Mesh.from_stl(data) if kind == "stl" \
                    else meshbool.Mesh.from_obj(data)
                mesh.check_closed()  # only a closed, manifold mesh bounds a solid
                shape = Shape(MESH, mesh)
        except cad.GeometryError as exc:
            raise _invalid(exc, "params.data") from exc
        derived, blobs = self._store(shape)
        return derived, {**blobs, "source": self.blobs.put(data)}

    @action(allow=CALLERS)
    async def export(self, call: Call, params: ExportParams) -> dict[str, Any]:
        """A shape as a STEP, BREP, STL or GLB file: a blob, downloaded with `GET /blobs/HASH`
        from the relay (never inside JSON)."""
        _, found = await self._entities([params.id])
        if not found:
            raise ActionError(404, "not_found", f"no shape {params.id} in the model",
                              "params.id")
        data = await self._compute(self._write_file, found[0], params)
        digest = await asyncio.to_thread(self.blobs.put, data)
        await self._model("keep_blobs", blobs=[digest])  # its participants may download it
        return {"blob": digest, "bytes": len(data), "format": params.format}

    def _write_file(self, entity: dict[str, Any], params: ExportParams) -> bytes:
        from twinstack.sim import cad

        shape = self.shapes.get(entity)
        try:
            if shape.representation == MESH:
                if params.format != "stl":
                    raise cad.GeometryError(f"{entity['name']} is a triangle mesh: it exports "
                                            "as STL only")
                return shape.value.to_stl()
            solid: cad.Solid = shape.value
            if params.format == "step":
                return solid.to_step()
            if params.format == "brep":
                return solid.to_brep()
            tolerance = params.tolerance or default_tolerance(solid)
            if params.format == "stl":
                return solid.to_stl(tolerance)
            return solid.to_glb(tolerance, entity["name"], _material_color(entity))
        except cad.GeometryError as exc:
            raise _invalid(exc, "params.tolerance") from exc

    @action(allow=CALLERS)
    async def properties(self, call: Call, params: EntityRef) -> dict[str, Any]:
        """Volume, area, bounding box, centre of mass (and, of a solid, its edges, numbered
        as fillet and chamfer take them)."""
        _, found = await self._entities([params.id])
        if not found:
            raise ActionError(404, "not_found", f"no shape {params.id} in the model",
                              "params.id")
        return await self._compute(self._describe, found[0])

    def _describe(self, entity: dict[str, Any]) -> dict[str, Any]:
        shape = self.shapes.get(entity)
        if shape.representation == MESH:
            return {"representation": MESH, **_mesh_properties(shape.value)}
        return {"representation": BREP, **shape.value.properties(),
                "edges": shape.value.edges()}

    @action(allow=CALLERS)
    async def create_material(self, call: Call, params: MaterialParams) -> dict[str, Any]:
        """A material entity (relative permittivity and permeability, conductivity) to assign
        to solids."""
        author = self._editor(call)
        result = await self._commit(author, f"material {params.name}", None, creates=[{
            "kind": "material", "name": params.name,
            "properties": params.model_dump(exclude={"name"})}])
        return {"id": result["ids"][0], "head": result["head"]}

    @action(allow=CALLERS)
    async def assign_material(self, call: Call, params: AssignParams) -> dict[str, Any]:
        """Give solids a material (one new state; a library material is added on first use)."""
        author = self._editor(call)
        state, found = await self._entities()
        by_id = {e["id"]: e for e in found}
        materials = [e for e in found if e["kind"] == "material"]
        creates: list[dict[str, Any]] = []
        chosen = by_id.get(params.material)
        if chosen is not None and chosen["kind"] != "material":
            raise ActionError(422, "invalid_params", f"{chosen['name']} is a "
                              f"{chosen['kind']}, not a material", "params.material")
        if chosen is None:
            named = [m for m in materials if m["name"] == params.material]
            if named:
                chosen = named[0]
            elif params.material in MATERIALS:
                creates.append({"kind": "material", "name": params.material,
                                "properties": MATERIALS[params.material]})
            else:
                raise ActionError(404, "not_found", f"no material {params.material!r}: give a "
                                  "material entity's id or one of the library's: "
                                  f"{', '.join(MATERIALS)}", "params.material")
        wrong = [i for i in params.ids if by_id.get(i, {}).get("kind") != "geometry"]
        if wrong:
            raise ActionError(422, "invalid_params", f"{wrong[0]} is not a shape in the model",
                              "params.ids")
        names = ", ".join(by_id[i]["name"] for i in params.ids[:3])
        material_id = chosen["id"] if chosen is not None else uuid.uuid4().hex
        for made in creates:
            made["id"] = material_id
        result = await self._commit(
            author, f"{params.material} for {names}{' ...' if params.ids[3:] else ''}", state,
            creates=creates,
            updates=[{"id": i, "properties": {"material": material_id}} for i in params.ids])
        return {"material": material_id, "head": result["head"]}


def _free_name(feature: str, entities: list[dict[str, Any]]) -> str:
    """`sphere1`, `sphere2` ...: the first one no entity has."""
    taken = {e["name"] for e in entities}
    return next(f"{feature}{n}" for n in range(1, len(taken) + 2)
                if f"{feature}{n}" not in taken)


@functools.cache  # once a process: a pooled worker did it before its session claimed it
def _warm_up() -> None:
    """Load the kernel and build one shape, so the first call is not the slow one."""
    from twinstack.sim import cad

    cad.build("box", {"size": [1, 1, 1]}, []).properties()


def _mesh_properties(mesh: Any) -> dict[str, Any]:
    return {"volume": mesh.volume, "area": mesh.area, "faces": len(mesh.faces)}


def _material_color(entity: dict[str, Any]) -> tuple[float, float, float]:
    return (0.8, 0.6, 0.2) if entity["properties"].get("material") else (0.7, 0.7, 0.75)
