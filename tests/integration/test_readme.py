"""Every example in README.md runs as written, in order, against the platform `make up` starts.

The blocks run in a scratch directory laid out like a checkout after `make up` (`.venv`, and
`data` — the platform's data directory, given to make as `DATA`), so relative paths such as
`data/pki/ca.pem` and `.venv/bin/twinstack` mean what they mean to a reader. `make up` is the
first block's first command; its second, `make test`, is what CI itself runs (.ci/run), so
running it here would recurse. ```text blocks are synopses with placeholders, not examples.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.platform_fixtures import wait_until

# The examples name port 7400, as test_kube_play.py's pods do: that one is marked alone, so
# the two never run at once; every other test takes its ports from its worker's range.

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README, flags=re.S | re.M)
SETUP = "make up"
FRONT_DOOR = 7400  # the examples name https://127.0.0.1:7400

# What a block's output must show besides a zero exit status, keyed by a phrase of the block.
EXPECTED = {
    "session types": ["data analysis", "kriging"],
    "\"survey\", \"data analysis\"": ["2.50", "variogram:", "events:"],
    "smaller ball": ["part: 1.6163", "smaller ball: 2.6258"],
    "project history": ["* 1", "<- head", "ball: radius=1.1"],
    "mesh.cartesian": ["voxel volume: 7.48", "tet volume: 7.48", "min dihedral angle:",
                       "wrote fill.png, part.glb, quality.png, tets.glb"],
    "solver.setup": ["cavity TE101: 2.39", "patch: S11 -", "patch: done",
                     "wrote cavity_probe.png, patch_field.png, patch_s11.png"],
    "geochemistry": ["speciated 500 wells with phreeqc.dat", "0 failed", "calcite SI:",
                     "step 5: pH", "wrote calcite_si.png"],
    "openapi.json": ['"openapi":"3.1.0"', '"service":"gss"'],
    "certs show": ["CN=gss", "gss.example.org", "Revoked:     YES", "next update"],
    "serve --help": ["usage: twinstack serve"],
    "twinstack logs": ["auth"],
}


def test_the_readme_has_the_blocks_this_test_knows():
    languages = {lang for lang, _ in BLOCKS}
    assert languages <= {"sh", "python", "text"}, languages
    first_lang, first = BLOCKS[0]
    assert first_lang == "sh"
    assert [line.split("#")[0].strip() for line in first.splitlines()] == [SETUP, "make test"]


@pytest.fixture
def checkout(tmp_path):
    """A scratch directory like a checkout with the platform of `make up` running in it."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", FRONT_DOOR))
        except OSError:
            pytest.fail(f"port {FRONT_DOOR} is taken: the README's examples need it free")
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINSTACK_")
           and k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}  # a user's make, not a sub-make
    env.update({"DATA": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
                "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"})
    log = (tmp_path / "make-up.log").open("w")
    make = subprocess.Popen(SETUP.split(), cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: "TwinStack is up" in (tmp_path / "make-up.log").read_text()
                   or make.poll() is not None, timeout=300, what="make up")
        assert make.poll() is None, (tmp_path / "make-up.log").read_text()
        yield tmp_path, env
    finally:
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C, as the README says
        try:
            make.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
        log.close()
    assert "TwinStack stopped." in (tmp_path / "make-up.log").read_text()


def run_block(language: str, code: str, cwd: Path, env: dict[str, str]) -> str:
    if language == "python":
        script = cwd / "example.py"
        script.write_text(code)
        command = [str(cwd / ".venv" / "bin" / "python"), str(script)]
    else:
        command = ["bash", "-e", "-c", code]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{code}\n--- exit {done.returncode}\n{done.stdout}\n" \
                                 f"{done.stderr}"
    return done.stdout + done.stderr


def test_every_example_runs_as_written(checkout):
    cwd, env = checkout
    examples = [(lang, code) for lang, code in BLOCKS[1:] if lang != "text"]
    assert len(examples) >= 6
    for language, code in examples:
        output = run_block(language, code, cwd, env)
        for phrase, wanted in EXPECTED.items():
            if phrase in code:
                for text in wanted:
                    assert text in output, f"{code}\n--- printed:\n{output}"
