"""Project history at scale: commit, checkout, undo, redo and history listing at 10,000
entities x 1,000 states, on SQLite and on PostgreSQL (when one answers).

Run from the repository root:

    .venv/bin/python benchmarks/model_store.py > model_store.json

Per backend: one project gets a first state of N entities, then S - 1 states each changing a
few random entities (a mix of updates, creations and deletions). Then, on that history:

* commit: a one-entity update (one transaction);
* checkout / undo / redo: moving the head (`move`) and moving it plus resolving the
  full entity → version map of the new head (`with_tree`, what a model service needs);
* entities: the head's full entity list with names and properties;
* graph: the whole history listing;
* rows: what the tables hold (snapshots vs the N x S a full list per state would take).

Times in ms (median, 95th percentile, min, max) over random states. JSON to stdout, progress
to stderr.
PostgreSQL: a throwaway database on $TWINSTACK_TEST_PG_URL (default postgres@127.0.0.1:5432),
dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import func, make_url, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.timing

from benchmarks.timing import milliseconds
from twinstack.store import Database
from twinstack.store import accounts as acc
from twinstack.store import history as h
from twinstack.store import projects as prj
from twinstack.store.models import EntityVersion, ModelState, StateChange, StateSnapshot

PG = os.environ.get("TWINSTACK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def backends(pg: bool) -> Iterator[tuple[str, str]]:
    """(backend, URL) of fresh databases: a SQLite file, and PostgreSQL if it answers; each is
    removed once the caller asks for the next."""
    with tempfile.TemporaryDirectory() as tmp:
        yield "sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}"
    if not pg:
        return
    name = f"twinstack_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(_conninfo(PG), connect_timeout=3, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        log(f"PostgreSQL skipped: {exc}")
        return
    try:
        yield "postgresql", make_url(PG).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_conninfo(PG), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def build(db: Database, project: str, n: int, states: int, rng: random.Random) -> list[int]:
    """The history: N entities, then states - 1 small edits. Returns the state ids."""
    edit = h.Edit()
    live = [edit.create("geometry", f"solid{i}", properties={"radius": i, "op": "sphere"},
                        blobs={"brep": f"{i:064x}"}) for i in range(n)]
    ids = []
    with db.transaction() as s:
        ids.append(h.commit(s, project, edit, author="bench", description="import").id)
    for step in range(states - 1):
        edit = h.Edit()
        picked = rng.sample(range(len(live)), 3)
        edit.update(live[picked[0]], properties={"radius": step, "op": "sphere"})
        if step % 3 == 0:
            edit.delete(live[picked[1]])
            live[picked[1]] = edit.create("geometry", f"new{step}")
        with db.transaction() as s:
            ids.append(h.commit(s, project, edit, author="bench", description=f"edit {step}").id)
        if step % 200 == 0:
            log(f"  {step + 2} states")
    return ids


def measure(backend: str, url: str, n: int, states: int, runs: int) -> dict[str, Any]:
    db = Database(url)
    db.migrate()
    rng = random.Random(1)
    with db.transaction() as s:
        project = prj.create_project(s, acc.add_user(s, "bench", "bench-password-1"), "big",
                                     "3D simulation").id
    start = time.perf_counter()
    ids = build(db, project, n, states, rng)
    build_s = time.perf_counter() - start
    log(f"{backend}: built {states} states of {n} entities in {build_s:.1f} s")

    def in_tx(fn: Callable[[Any], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with db.transaction() as s:
                return fn(s)
        return run

    def with_tree(move: Callable[[Any], h.Head]) -> Callable[[Any], Any]:
        return lambda s: h.tree(s, project, move(s).state.id)

    def checkout(s: Any) -> h.Head:
        return h.checkout(s, project, rng.choice(ids))

    def undo(s: Any) -> h.Head:
        if not h.head(s, project).can_undo:  # type: ignore[union-attr]
            h.checkout(s, project, rng.choice(ids[1:]))
        return h.undo(s, project)

    def redo(s: Any) -> h.Head:
        if not h.head(s, project).can_redo:  # type: ignore[union-attr]
            h.checkout(s, project, rng.choice(ids))
            h.undo(s, project)
        return h.redo(s, project)

    result: dict[str, Any] = {"build_s": round(build_s, 1)}
    for name, move in (("checkout", checkout), ("undo", undo), ("redo", redo)):
        result[name] = {"move": milliseconds(in_tx(move), runs, warm_up=False),
                        "with_tree": milliseconds(in_tx(with_tree(move)), runs, warm_up=False)}
    in_tx(lambda s: h.checkout(s, project, ids[-1]))()
    result["tree_entries"] = len(in_tx(lambda s: h.tree(s, project))())
    edited = next(iter(in_tx(lambda s: h.tree(s, project))()))

    def one_edit(s: Any) -> None:
        edit = h.Edit()
        edit.update(edited, properties={"radius": rng.random()})
        h.commit(s, project, edit, author="bench", description="one edit")

    result["commit"] = milliseconds(in_tx(one_edit), runs, warm_up=False)
    few = max(3, runs // 10)  # whole-project reads: fewer runs
    result["entities"] = milliseconds(in_tx(lambda s: h.entities(s, project)), few, warm_up=False)
    result["graph"] = milliseconds(in_tx(lambda s: h.graph(s, project)), few, warm_up=False)
    with db.transaction() as s:
        result["rows"] = {model.__tablename__: s.scalar(select(func.count()).select_from(model))
                          for model in (ModelState, EntityVersion, StateChange, StateSnapshot)}
    result["rows"]["full_list_per_state_would_be"] = n * states
    db.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--states", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    results = {}
    for backend, url in backends(not args.no_postgres):
        results[backend] = measure(backend, url, args.entities, args.states, args.runs)
    print(json.dumps({"entities": args.entities, "states": args.states,
                      "checkpoint_every": h.CHECKPOINT, "runs": args.runs,
                      "backends": results}, indent=2))


if __name__ == "__main__":
    main()
