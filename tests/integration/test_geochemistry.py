"""The phreeqc service end to end through the Python client against `twinstack up`, in a
"geochemistry" session: seawater speciated as PHREEQC itself does it with the pinned database;
a malformed input refused with PHREEQC's message and its line, the project unchanged; a long
reaction path reporting progress and cancelled (its worker process ended); 1,000 samples from
a CSV speciated in one call and their calcite saturation index kriged into a map."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from phreeqc import Phreeqc

from tests.geochem_samples import samples_csv
from tests.model_checks import refused
from tests.platform_fixtures import running_platform, session_processes
from twinstack.client import Session
from twinstack.services.phreeqc import SpeciateParams, _samples
from twinstack.sim import geochem

LONG = 120.0  # a hang guard, never the thing tested
# Seawater (the PHREEQC manual's example 1 composition) with its saturation indices selected
PHASES = ["Calcite", "Aragonite", "Dolomite", "Gypsum", "Anhydrite", "Halite", "Sylvite",
          "Chalcedony", "Quartz", "Hematite", "Goethite"]
SEAWATER = f"""TITLE seawater
SOLUTION 1 seawater
    units     ppm
    pH        8.22
    pe        8.451
    density   1.023
    temp      25.0
    Ca        412.3
    Mg        1291.8
    Na        10768.0
    K         399.1
    Fe        0.002
    Mn        0.0002    pe
    Si        4.28
    Cl        19353.0
    Alkalinity 141.682  as HCO3
    S(6)      2712.0
    N(5)      0.29      gfw   62.0
    N(-3)     0.03      as    NH4
    U         3.3       ppb   N(5)/N(-3)
    O(0)      1.0       O2(g) -0.7
SELECTED_OUTPUT 1
    -reset false
    -saturation_indices {" ".join(PHASES)}
END
"""
BAD = "SOLUTION 1\n  temp 25\n  Ca 1\n  pH seven\nEND\n"


WORKERS = 3  # warm workers a speciation is split between, whatever the machine's cores


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """A session on a node told to give each compute action WORKERS processes (the node
    passes its limits on to the services it starts)."""
    with running_platform(tmp_path_factory.mktemp("geochemistry"), "ada",
                          env={"TWINSTACK_COMPUTE_WORKERS": str(WORKERS)}) as platform:
        tw = platform.client("ada")
        project = tw.create_project("aquifer", "geochemistry")["id"]
        with tw.open_session(project) as opened:
            yield opened


def phreeqc_itself(text: str) -> tuple[dict[str, float], dict[str, float]]:
    """The SIs PHREEQC writes for `text` with the package's phreeqc.dat, run here directly:
    its selected output, and the 'Saturation indices' table of its printed output."""
    p = Phreeqc()
    p.LoadBuiltInDatabase("phreeqc.dat")
    p.SetOutputStringOn(True)
    assert p.RunString(text) == 0, p.GetErrorString()
    selected = p.GetSelectedOutput()
    exact = {name.removeprefix("si_"): float(values[0]) for name, values in selected.items()}
    section = p.GetOutputString().split("Saturation indices")[1].split("**For a gas")[0]
    printed = {m[1]: float(m[2]) for m in re.finditer(r"^\s+(\S+)\s+(-?\d+\.\d+)\s", section,
                                                      re.M)}
    return exact, printed


def test_seawater_gives_the_saturation_indices_phreeqc_prints(session):
    databases = session.geochemistry.databases()
    assert "phreeqc.dat" in databases["built_in"] and databases["default"] == "phreeqc.dat"
    [table] = session.geochemistry.run(SEAWATER, name="seawater", timeout=LONG)
    ours = dict(zip(table["columns"], table["rows"][0], strict=True))
    exact, printed = phreeqc_itself(SEAWATER)
    for phase in PHASES:
        assert abs(ours[f"si_{phase}"] - exact[phase]) < 1e-3, phase
        assert abs(ours[f"si_{phase}"] - printed[phase]) <= 0.005 + 1e-9, phase
    assert ours["si_Calcite"] > 0.5 and ours["si_Halite"] < -2  # supersaturated, undersaturated
    # the run is entities: its input, and the table naming the database it was computed with
    solver = session.model.find("seawater")
    assert session.blob(solver["blobs"]["input"]).decode() == SEAWATER
    database = resources.files("phreeqc").joinpath("databases", "phreeqc.dat").read_bytes()
    [result] = [e for e in session.model.entities() if e.get("parent") == solver["id"]]
    assert result["properties"]["database"] == "phreeqc.dat"
    assert result["properties"]["database_sha256"] == hashlib.sha256(
        database.decode(errors="replace").encode()).hexdigest()
    assert result["properties"]["phreeqc"] == Phreeqc().GetVersionString()


def test_a_malformed_input_gets_phreeqcs_error_with_its_line_and_changes_nothing(session):
    message = refused(session, 422, session.geochemistry.run, BAD, timeout=LONG)
    assert "line 4 ('pH seven')" in message and "Concentration data error for ph" in message
    assert session.geochemistry.status()["line"] == 4


def worker_processes(session: Session) -> set[int]:
    """The PIDs of the phreeqc service's worker processes (its children)."""
    [service] = [p for p in session_processes(session.id)
                 if b"phreeqc" in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")]
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if f"\nPPid:\t{service}\n" in status and "State:\tZ" not in status:
            found.add(int(entry.name))
    return found


def test_a_long_reaction_path_reports_progress_and_can_be_cancelled(session):
    long_path = ("SOLUTION 1\n pH 7\n Ca 1\n C(4) 2 CO2(g) -3.5\nREACTION 1\n CaCl2 1\n"
                 " 1 mol in 5000000 steps\nSELECTED_OUTPUT 1\n -reset false\n -step true\n"
                 " -si Calcite Gypsum\nEND\n")
    session.geochemistry.speciate([{"pH": 7.2, "Ca": 40, "Alkalinity": 120}])
    warm = worker_processes(session)  # the workers short calls use
    assert len(warm) == WORKERS
    before = session.model.head()
    started = session.geochemistry.start(long_path, name="long path")
    assert started["steps"] == 5_000_000
    seen = session.wait_for_event(lambda e: e.get("type") == "job" and e["job"] ==
                                  started["job"] and e["step"] > 0, LONG)
    assert seen["status"] == "running" and 0 < seen["step"] < seen["steps"]
    assert len(worker_processes(session) - warm) == 1  # the job's own
    assert session.geochemistry.cancel(started["job"])["status"] == "cancelling"
    end = session.geochemistry.wait(started["job"], LONG)
    assert end["status"] == "cancelled" and end["reason"] == "cancelled by a user"
    assert session.model.head() == before  # nothing committed
    assert worker_processes(session) == warm  # the job's worker is gone
    # the service goes on: a short path afterwards runs to its end
    [table] = session.geochemistry.run(long_path.replace("5000000", "10"), timeout=LONG)
    assert len(table["rows"]) == 11  # the initial solution and 10 steps


def test_a_thousand_samples_are_speciated_in_one_call_and_kriged_into_a_map(session):
    found = session.geochemistry.speciate(csv=samples_csv(1000), name="wells")
    assert len(found["rows"]) == 1000 and found["failed"] == {}
    assert found["database"] == "phreeqc.dat" and len(found["database_sha256"]) == 64
    columns = found["columns"]
    assert columns[:3] == ["sample", "x", "y"] and "si_Calcite" in columns
    rows = found["rows"]
    assert rows[0][0] == "w0"
    x, y, si = (np.array([r[columns.index(c)] for r in rows], float)
                for c in ("x", "y", "si_Calcite"))
    assert np.corrcoef(x, si)[0, 1] > 0.5  # more calcium to the east: more saturated
    stored = session.geochemistry.table(found["id"])
    assert stored["rows"] == rows
    kriged = session.call("kriging", "interpolate", points=np.c_[x, y].tolist(),
                          values=si.tolist(), grid={"x": [0, 1000, 41], "y": [0, 1000, 31]},
                          neighbours=40)
    field = np.array(kriged["estimates"])
    assert field.shape == (31, 41)
    assert field[:, -1].mean() > field[:, 0].mean() + 0.2  # the map shows it too


def test_a_batch_split_between_workers_keeps_its_order_and_names_failed_samples(session):
    """Split between WORKERS processes, a batch's rows are those of the batch speciated in one
    process, in order, and a sample PHREEQC cannot solve is named by its own number."""
    lines = samples_csv(1000).splitlines()
    for n in (150, 850):  # an acid sample early and late: its alkalinity cannot converge
        cells = lines[n + 1].split(",")
        cells[4] = "2.0"
        lines[n + 1] = ",".join(cells)
    csv = "\n".join(lines)
    found = session.geochemistry.speciate(csv=csv)
    assert sorted(found["failed"], key=int) == ["150", "850"]
    assert "initial solution  851." in found["failed"]["850"]
    engine = geochem.Engine(geochem.built_in_text(geochem.DEFAULT_DATABASE))
    direct = geochem.speciate(engine, _samples(SpeciateParams(csv=csv)),
                              SpeciateParams().phases)
    assert found["columns"][3:] == direct.columns
    for got, expected in zip(found["rows"], direct.rows, strict=True):
        if expected is None:
            assert got[3:] == [None] * len(direct.columns)
        else:
            assert got[3:] == pytest.approx(expected, rel=1e-9)


def test_bad_samples_are_refused_naming_what_is_wrong(session):
    message = refused(session, 422, session.geochemistry.speciate,
                      csv="x,y,pH,Ca\n1,2,7,abc\n")
    assert "sample 1: Ca is 'abc', not a number" in message
    message = refused(session, 422, session.geochemistry.speciate,
                      [{"x": 0, "y": 0, "pH": 7, "Unobtainium": 1}])
    assert "Could not find element in database, Unobtainium" in message
    message = refused(session, 422, session.geochemistry.speciate,
                      [{"x": 0, "y": 0, "pH": 7, "Ca": 1}], phases=["Kryptonite"])
    assert "Did not find phase, Kryptonite" in message
    one_bad = [{"name": "ok", "pH": 7.2, "Ca": 40, "Alkalinity": 120},
               {"name": "acid", "pH": 2.0, "Ca": 40, "Alkalinity": 120},
               {"name": "ok too", "pH": 7.4, "Ca": 60, "Alkalinity": 150}]
    found = session.geochemistry.speciate(one_bad)
    assert list(found["failed"]) == ["1"] and "Alkalinity" in found["failed"]["1"]
    assert found["rows"][0][3] is not None and found["rows"][2][3] is not None
    assert found["rows"][1][3:] == [None] * (len(found["columns"]) - 3)


def test_an_uploaded_database_is_used_and_named(session):
    text = resources.files("phreeqc").joinpath("databases", "phreeqc.dat").read_bytes()
    mine = session.geochemistry.upload_database("my phreeqc", text.decode(errors="replace"))
    found = session.geochemistry.speciate([{"pH": 7.2, "Ca": 40, "Alkalinity": 120}],
                                          database=mine["id"])
    assert found["database"] == "my phreeqc" and found["database_sha256"] == mine["sha256"]
    assert [d["id"] for d in session.geochemistry.databases()["uploaded"]] == [mine["id"]]
    message = refused(session, 422, session.geochemistry.upload_database, "junk",
                      "PHASES\nNotAPhase\n  X = X\n  log_k nonsense\n")
    assert "PHREEQC does not load junk" in message
