"""A session's project data as the Python client sees it: `session.model`.

Thin wrappers over the model service's actions (through the relay, like every call), so a
script reads like what it does. Every change returns the new head; every participant of the
session also gets it as a `model_changed` event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twinstack.wire.errors import ActionError

if TYPE_CHECKING:
    from twinstack.client.client import Session

SERVICE = "model"
STATUS_EVERY = 5.0  # seconds a job waiter goes without news before it asks the status


class Model:
    """Entities, their versions and the history of one session's project."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def _read(self, action: str, **params: Any) -> Any:
        return self._session.call(SERVICE, action, idempotent=True, **params)

    def _write(self, action: str, **params: Any) -> Any:
        return self._session.call(SERVICE, action, **params)

    # reading
    def entities(self, *, state: int | None = None, kinds: list[str] | None = None
                 ) -> list[dict[str, Any]]:
        """The entities of the head (or of `state`), optionally only some kinds."""
        return list(self._read("entities", state=state, kinds=kinds)["entities"])

    def find(self, name: str) -> dict[str, Any]:
        """The entity of the head with this name (KeyError if none, ValueError if several)."""
        found = [e for e in self.entities() if e["name"] == name]
        if not found:
            raise KeyError(f"no entity named {name!r}")
        if len(found) > 1:
            raise ValueError(f"{len(found)} entities are named {name!r}: use their ids")
        return found[0]

    def get(self, entity_id: str, *, state: int | None = None) -> dict[str, Any]:
        return dict(self._read("get", id=entity_id, state=state))

    def head(self) -> dict[str, Any] | None:
        """Where the model stands: {state, tip, can_undo, can_redo} (None before any change)."""
        found = self._read("head")
        return None if found is None else dict(found)

    def history(self) -> dict[str, Any]:
        """Every state (branches too), oldest first, with the ids of head and tip."""
        return dict(self._read("history"))

    def diff(self, a: int, b: int) -> dict[str, list[str]]:
        return dict(self._read("diff", a=a, b=b))

    # writing
    def create(self, kind: str, name: str, *, parent: str | None = None,
               properties: dict[str, Any] | None = None,
               blobs: dict[str, str] | None = None) -> str:
        """A new entity (folder, material, data, result ...); returns its id. `blobs` names
        stored blobs by role (role -> hash)."""
        return str(self._write("create", kind=kind, name=name, parent=parent,
                               properties=properties or {}, blobs=blobs or {})["id"])

    def set(self, entity_id: str, *, name: str | None = None, parent: str | None = None,
            properties: dict[str, Any] | None = None) -> dict[str, Any]:
        """Rename, move (parent "" for the top) or change properties (None removes one)."""
        return dict(self._write("set", id=entity_id, name=name, parent=parent,
                                properties=properties)["head"])

    def delete(self, *entity_ids: str) -> dict[str, Any]:
        """Remove entities and what is under them (earlier states keep them)."""
        return dict(self._write("delete", ids=list(entity_ids))["head"])

    def undo(self) -> dict[str, Any]:
        return dict(self._write("undo")["head"])

    def redo(self) -> dict[str, Any]:
        return dict(self._write("redo")["head"])

    def checkout(self, state: int | None = None, *, label: str | None = None) -> dict[str, Any]:
        """Make a state (by id or label), of any branch, the head."""
        return dict(self._write("checkout", state=state, label=label)["head"])

    def label(self, name: str, state: int | None = None) -> dict[str, Any]:
        """Name a state (the head by default)."""
        return dict(self._write("label", name=name, state=state)["head"])


def history_lines(graph: dict[str, Any]) -> list[str]:
    """A history graph as text, newest branches first at each fork, like `git log --graph`
    turned upside down: a state's first child goes on in its column, later children (branches
    made after an undo) are drawn indented above it, each with its own line of descent."""
    states = {s["id"]: s for s in graph.get("states", [])}
    children: dict[int | None, list[int]] = {}
    for state in states.values():
        children.setdefault(state["parent_id"], []).append(state["id"])
    lines: list[str] = []
    stack = [(root, 0) for root in sorted(children.get(None, []), reverse=True)]
    while stack:
        state_id, depth = stack.pop()
        state = states[state_id]
        marks = [*(f"[{label}]" for label in state["labels"])]
        if state_id == graph.get("head"):
            marks.append("<- head")
        elif state_id == graph.get("tip"):
            marks.append("(tip)")
        lines.append(f"{'| ' * depth}* {state_id:<4} {state['description']}  "
                     f"({state['author']}, {str(state['created_at'])[:19].replace('T', ' ')})"
                     + "".join(f" {m}" for m in marks))
        kids = sorted(children.get(state_id, []))
        if kids:
            stack.append((kids[0], depth))  # drawn last: the line it continues
            stack.extend((kid, depth + 1) for kid in kids[1:])
    return lines


class Modeling:
    """Exact CAD on the session's model (the modeling service): each call is one new state."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def features(self) -> dict[str, Any]:
        """Every feature with its inputs, parameters and defaults; the material library."""
        return dict(self._session.call("modeling", "features", idempotent=True))

    def create(self, feature: str, *inputs: str, name: str | None = None,
               parent: str | None = None, **parameters: Any) -> str:
        """Build a feature: `create("sphere", radius=2)`, `create("union", a, b)`,
        `create("fillet", box, radius=1, edges=[0])`; returns the new entity's id."""
        return str(self._session.call("modeling", "create", feature=feature,
                                      inputs=list(inputs), parameters=parameters, name=name,
                                      parent=parent)["id"])

    def set_parameters(self, entity_id: str, **parameters: Any) -> list[str]:
        """Change a feature's parameters; returns the ids rebuilt (it and its dependants)."""
        return list(self._session.call("modeling", "set_parameters", id=entity_id,
                                       parameters=parameters)["rebuilt"])

    def properties(self, entity_id: str) -> dict[str, Any]:
        """Volume, area, bounding box, centre of mass (and a solid's numbered edges)."""
        return dict(self._session.call("modeling", "properties", id=entity_id,
                                       idempotent=True))

    def export(self, entity_id: str, format: str, tolerance: float | None = None) -> bytes:
        """The shape as a STEP, BREP, STL or GLB file (made as a blob, then downloaded)."""
        reply = self._session.call("modeling", "export", id=entity_id, format=format,
                                   tolerance=tolerance, idempotent=True)
        return self._session.blob(reply["blob"])

    def import_file(self, name: str, data: bytes, format: str) -> str:
        """A STEP/BREP file (exact) or an STL/OBJ mesh as a new shape; returns its id."""
        import base64

        return str(self._session.call("modeling", "import_file", name=name, format=format,
                                      data=base64.b64encode(data).decode())["id"])

    def assign_material(self, material: str, *entity_ids: str) -> str:
        """Give shapes a material (an entity id or a library name); returns its entity id."""
        return str(self._session.call("modeling", "assign_material", ids=list(entity_ids),
                                      material=material)["material"])


class Meshing:
    """Cartesian (cartesian-mesh) and tetrahedral (tet-mesh) meshes of the session's solids:
    each is a new mesh entity; its summary (cells or tets, volume, quality) is returned."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def cartesian(self, cell: float | list[float], *solids: str, **options: Any
                  ) -> dict[str, Any]:
        """Voxelize solids (default: all) with cells no larger than `cell`; options: padding,
        refinements [{lo, hi, cell}], snap, max_ratio, samples, priorities {id: n}, name."""
        return dict(self._session.call("cartesian-mesh", "create", cell=cell,
                                       solids=list(solids) or None, **options))

    def cartesian_estimate(self, cell: float | list[float], *solids: str, **options: Any
                           ) -> dict[str, Any]:
        """The grid `cartesian` would make (shape, cells, bytes) without making it."""
        return dict(self._session.call("cartesian-mesh", "estimate", cell=cell,
                                       solids=list(solids) or None, idempotent=True,
                                       **options))

    def tetrahedral(self, maxh: float, *solids: str, **options: Any) -> dict[str, Any]:
        """Tetrahedra no larger than `maxh` (options: sizes {id: h}, refinements [{center,
        radius, maxh}], grading, curvature_safety, name)."""
        return dict(self._session.call("tet-mesh", "create", maxh=maxh,
                                       solids=list(solids) or None, **options))

    def export(self, mesh_id: str, format: str) -> bytes:
        """A tetrahedral mesh as a VTU, MSH, Abaqus INP or Netgen VOL file."""
        reply = self._session.call("tet-mesh", "export", id=mesh_id, format=format,
                                   idempotent=True)
        return self._session.blob(reply["blob"])


class Visualization:
    """Pictures a browser (or a person) looks at: GLB scenes, slice images, plots."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def _file(self, action: str, **params: Any) -> bytes:
        reply = self._session.call("visualization", action, idempotent=True, **params)
        return self._session.blob(reply["blob"])

    def scene(self, *ids: str, tolerance: float | None = None) -> bytes:
        """Solids (default: all) as GLB, a named node per solid in its material's colour."""
        return self._file("scene", ids=list(ids) or None, tolerance=tolerance)

    def mesh_view(self, mesh_id: str, clip: dict[str, Any] | None = None) -> bytes:
        """A mesh as GLB; `clip={"origin": [...], "normal": [...]}` shows its inside."""
        return self._file("mesh_view", id=mesh_id, clip=clip)

    def slice(self, entity_id: str, **options: Any) -> bytes:
        """A PNG of a field cut by a plane (options: field, axis and position, or plane;
        cmap, vmin, vmax, size, resolution)."""
        return self._file("slice", id=entity_id, format="png", **options)

    def plot_data(self, entity_id: str) -> dict[str, Any]:
        """What `plot` draws, as numbers: a result's series ({label, x, y} each) and labels."""
        reply = self._session.call("visualization", "plot", id=entity_id, idempotent=True)
        return dict(reply["data"])

    def plot(self, entity_id: str, format: str = "png") -> bytes:
        """A tetrahedral mesh's quality histogram or a result's series, as PNG or SVG."""
        return self._file("plot", id=entity_id, format=format)


class JobService:
    """A service whose long work runs as jobs (one at a time per session) that report to the
    session as `job` events."""

    service: str

    def __init__(self, session: Session) -> None:
        self._session = session

    def status(self, job: str | None = None) -> dict[str, Any]:
        return dict(self._session.call(self.service, "status", job=job, idempotent=True))

    def cancel(self, job: str | None = None) -> dict[str, Any]:
        return dict(self._session.call(self.service, "cancel", job=job))

    def wait(self, job: str, timeout: float = 600.0,
             progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """The job's last event (done, failed or cancelled), passing each `running` one to
        `progress`. Events are news that can be lost (the model service restarting as the
        job ends): every STATUS_EVERY seconds without one, it asks the job's status."""
        def ended(event: dict[str, Any]) -> bool:
            if event.get("type") != "job" or event.get("job") != job:
                return False
            if event["status"] == "running":
                if progress is not None:
                    progress(event)
                return False
            return True
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                return self._session.wait_for_event(ended, max(0.0, min(left, STATUS_EVERY)))
            except TimeoutError:
                now = self.status(job)
                if now["status"] != "running":
                    return now
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"job {job} still running after {timeout:g} s "
                                       f"(step {now['step']} of {now['steps']})") from None


class Solver(JobService):
    """FIT-TD simulations (fit-td): a setup is entities (a simulation with its ports, probes
    and planes); a run is a job whose progress arrives as `job` events."""

    service = "fit-td"

    def setup(self, mesh_id: str, f_min: float, f_max: float, **options: Any
              ) -> dict[str, Any]:
        """A simulation on a Cartesian mesh for f_min..f_max Hz; options: ports [{name, lo,
        hi, direction, resistance, excited}], probes [{name, point, component}], planes
        [{name, axis, position}], frequencies, boundaries {face: pec|pmc|pml}, pml_cells,
        duration, courant, precision, checkpoint_every, name."""
        return dict(self._session.call("fit-td", "setup", mesh=mesh_id, f_min=f_min,
                                       f_max=f_max, **options))

    def run(self, simulation_id: str) -> dict[str, Any]:
        """Start it: {job, steps, cells, bytes}."""
        return dict(self._session.call("fit-td", "run", id=simulation_id))


class Geochemistry(JobService):
    """PHREEQC (the phreeqc service): speciate samples in batches, run inputs as jobs, upload
    databases. Every result is an entity naming the database (and its SHA-256) it used."""

    service = "phreeqc"

    def databases(self) -> dict[str, Any]:
        return dict(self._session.call("phreeqc", "databases", idempotent=True))

    def upload_database(self, name: str, text: str) -> dict[str, Any]:
        """A database file as an entity ({id, sha256}); 422 with PHREEQC's error if it does
        not load."""
        return dict(self._session.call("phreeqc", "upload_database", name=name, text=text))

    def speciate(self, samples: list[dict[str, Any]] | None = None, *, csv: str | None = None,
                 **options: Any) -> dict[str, Any]:
        """Samples ({x, y, name, pH, pe, temp, element: concentration}) or a CSV of them,
        speciated in one call: {id, columns, rows, failed, database, database_sha256};
        options: phases, units, database, name."""
        return dict(self._session.call("phreeqc", "speciate", samples=samples, csv=csv,
                                       **options))

    def start(self, input: str, **options: Any) -> dict[str, Any]:
        """Start a PHREEQC input as a job: {job, steps, database, database_sha256}; options:
        database, name."""
        return dict(self._session.call("phreeqc", "run", input=input, **options))

    def run(self, input: str, timeout: float = 600.0,
            progress: Callable[[dict[str, Any]], None] | None = None, **options: Any
            ) -> list[dict[str, Any]]:
        """Run an input to its end: its SELECTED_OUTPUT tables ({columns, rows} each, as
        stored); ActionError 422 with PHREEQC's message and line if it refuses the input."""
        end = self.wait(self.start(input, **options)["job"], timeout, progress)
        if end["status"] != "done":
            raise ActionError(422 if end["status"] == "failed" else 409, end["status"],
                              str(end.get("reason")))
        return [self.table(entity_id) for entity_id in end["results"][1:]]

    def table(self, entity_id: str) -> dict[str, Any]:
        """A result table's {columns, rows}."""
        entity = self._session.model.get(entity_id)
        return dict(json.loads(self._session.blob(entity["blobs"]["table"])))
