"""The model service end to end: a project's history written through the Python client against
`twinstack up`, seen live by every participant, refused when the input is bad or the user may
only look, kept across sessions, drawn by the CLI, and atomic when the service is killed in the
middle of a large commit."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.model_checks import head_id, refused, shared_project
from tests.platform_fixtures import (
    PASSWORD,
    Platform,
    running_platform,
    session_processes,
    start_platform,
    stop_platform,
    wait_until,
)
from twinstack.client import ActionError

ZERO_BLOB = "0" * 64


def model_events(session, count: int) -> list[dict]:
    found: list[dict] = []
    while len(found) < count:
        found.append(session.wait_for_event(lambda e: e.get("type") == "model_changed",
                                            timeout=30))
    return found


def test_history_through_the_model_service(tmp_path, database_url):
    platform = start_platform(tmp_path, "--database-url", database_url)
    try:
        for user in ("ada", "bob", "cy"):
            platform.add_user(user)
        ada, bob, cy, project = shared_project(platform, "survey")
        session = ada.open_session(project)
        assert {"model", "modeling"} <= set(session.services)
        watcher = bob.open_session(project)
        assert watcher.id == session.id
        viewer = cy.open_session(project)
        for s in (session, watcher, viewer):  # the relay follows the model from here on
            s.wait_for_event(lambda e: e.get("type") == "model_head")
        m = session.model

        folder = m.create("folder", "inputs")
        data = m.create("data", "wells", parent=folder, properties={"count": 3})
        m.set(data, properties={"count": 4, "unit": "m"})
        m.label("four wells")
        m.undo()
        m.undo()
        m.redo()
        assert {e["name"]: e["properties"] for e in m.entities()} == {
            "inputs": {}, "wells": {"count": 3}}
        branch = m.create("data", "borehole", parent=folder)  # after undo: a new branch
        graph = m.history()
        tips = [s["id"] for s in graph["states"]
                if not any(t["parent_id"] == s["id"] for t in graph["states"])]
        assert len(tips) == 2 and graph["head"] in tips  # two branches, nothing lost
        m.checkout(label="four wells")
        assert {e["name"] for e in m.entities()} == {"inputs", "wells"}
        assert m.get(data)["properties"] == {"count": 4, "unit": "m"}
        assert m.diff(graph["head"], head_id(session)) == {
            "added": [], "removed": [branch], "changed": [data]}

        # every change reached the other participant as it happened, with the head it made
        seen = model_events(watcher, 9)
        assert [e["operation"] for e in seen] == [
            "commit", "commit", "commit", "label", "undo", "undo", "redo", "commit", "checkout"]
        assert seen[-1]["head"] == m.head() and seen[0]["author"] == "ada"
        assert seen[-1]["entities"] == {"added": [], "removed": [branch], "changed": [data]}

        # the editor edits; the viewer reads but is refused any change
        watcher.model.set(data, name="wells (checked)")
        assert viewer.model.get(data)["name"] == "wells (checked)"
        viewer.wait_for_event(lambda e: e.get("type") == "model_changed"
                              and e["author"] == "bob")
        assert "viewer" in refused(viewer, 403, viewer.model.set, data, name="mine")
        refused(viewer, 403, viewer.model.undo)

        # bad input: a clear 4xx, and the model does not move
        m.checkout(graph["states"][0]["id"])
        assert "nothing to undo" in refused(session, 409, m.undo)
        m.checkout(label="four wells")
        assert "no model state" in refused(session, 404, m.checkout, 10**9)
        refused(session, 404, m.delete, "f" * 32)
        refused(session, 422, m.set, data, properties={"feature": "sphere"})
        refused(session, 422, m.create, "hologram", "x")
        assert "not in the blob store" in refused(
            session, 422, session.call, "model", "create", kind="data", name="x",
            blobs={"raw": ZERO_BLOB})
        refused(session, 422, m.create, "data", " ")

        # a folder goes with what is in it; undo brings both back
        m.delete(folder)
        assert m.entities() == []
        m.undo()
        assert {e["name"] for e in m.entities()} == {"inputs", "wells"}

        before = m.history()
        for s in (viewer, watcher):
            s.detach()
        session.close()
        wait_until(lambda: not session_processes(session.id), what="the session to end")
        assert ada.project_history(project) == before  # readable without a session
        again = ada.open_session(project)
        assert again.id != session.id
        assert again.model.history() == before
        assert {e["name"] for e in again.model.entities()} == {"inputs", "wells"}
        again.close()
    finally:
        stop_platform(platform)


def test_the_cli_draws_the_history_graph(tmp_path):
    with running_platform(tmp_path, "ada") as platform:
        tw = platform.client("ada")
        project = tw.create_project("drawn", "3D simulation")["id"]
        with tw.open_session(project) as session:
            m = session.model
            first = m.create("data", "a")
            m.set(first, properties={"v": 1})
            m.label("v1")
            m.undo()
            m.create("data", "b")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("TWINSTACK_")},
               "XDG_CONFIG_HOME": str(tmp_path / "config")}

        def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "twinstack", *args], input=stdin,
                                  env=env, text=True, capture_output=True, timeout=60)

        assert cli("login", "ada", "--password-stdin", "--data-dir", str(platform.data),
                   stdin=PASSWORD + "\n").returncode == 0
        drawn = cli("project", "history", "drawn")
        assert drawn.returncode == 0, drawn.stderr
        lines = drawn.stdout.splitlines()
        # the later branch (made after the undo) drawn indented above the one it left
        assert [line.split()[:3] for line in lines] == [
            ["*", "1", "empty"], ["*", "2", "create"], ["|", "*", "4"], ["*", "3", "change"]]
        assert lines[2].endswith("<- head") and "create data b" in lines[2]
        assert lines[3].endswith("[v1]") and "change a" in lines[3]
        missing = cli("project", "history", "nonesuch")
        assert missing.returncode != 0 and "no projects you can see" in missing.stderr


def test_a_model_killed_during_a_large_commit_leaves_the_old_or_the_new_state(
        platform: Platform):
    platform.add_user("ada")
    tw = platform.client("ada")
    with tw.open_session(tw.create_project("big", "3D simulation")["id"]) as session:
        m = session.model
        m.create("data", "kept", properties={"n": 0})
        before = head_id(session)
        model_pid = next(pid for pid in session_processes(session.id)
                         if b"model" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
        log = next(platform.data.glob(f"*/sessions/{session.id}/model/model.out"))
        size = log.stat().st_size
        count = 20_000

        def kill_when_committing() -> bool:
            with log.open("rb") as f:
                f.seek(size)
                if b"committing 20000 new" not in f.read():
                    return False
            os.kill(model_pid, signal.SIGKILL)
            return True

        # The kill lands while the commit's transaction runs (it takes about a second here);
        # should the machine be so slow that it lands after, the outcome must be whole too.
        killer = threading.Thread(target=wait_until, args=(kill_when_committing,),
                                  kwargs={"interval": 0.002, "what": "the commit to start"})
        killer.start()
        with contextlib.suppress(ActionError):
            session.call("model", "commit", description="many wells", creates=[
                {"kind": "data", "name": f"well {i}", "properties": {"depth": i}}
                for i in range(count)])
        killer.join()
        session.wait_for_event(lambda e: e.get("type") == "restarted", timeout=60)
        after = session.model.entities()
        names = {e["name"] for e in after}
        if head_id(session) == before:  # the old state, whole
            assert names == {"kept"}
        else:  # or the new one, whole
            assert len(names) == count + 1 and session.model.head()["state"]["description"] \
                == "many wells"
        assert [s["id"] for s in session.model.history()["states"]][-1] == head_id(session)
