"""Load a GLB with three.js's own GLTFLoader in node (tests/js/load_glb.mjs): what a browser
would build from our bytes, checked by the loader itself rather than by our own reader.

three.js comes from the npm registry at the version pinned in tests/js/package-lock.json:
`npm ci` runs once per test session when tests/js/node_modules lacks that version. Without
node or npm the tests fail (CI must run them), naming the packages to install.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest

JS = Path(__file__).parent / "js"
SCRIPT = JS / "load_glb.mjs"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not installed: the GLB tests load scenes with three.js in node. "
            "Install nodejs and npm (apt-get install nodejs npm; scripts/system-packages.sh "
            "does it as root)",
            pytrace=False,
        )
    return path


def _installed_version() -> str | None:
    try:
        meta = json.loads((JS / "node_modules" / "three" / "package.json").read_text())
    except (OSError, ValueError):
        return None
    return str(meta.get("version"))


@cache
def _three() -> str:
    """Install the pinned three.js once per session (under a lock: pytest-xdist workers)."""
    node = tool("node")
    wanted = json.loads((JS / "package.json").read_text())["dependencies"]["three"]
    if _installed_version() != wanted:
        npm = tool("npm")
        with open(JS / ".npm-ci.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _installed_version() != wanted:
                done = subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund"],
                    cwd=JS, capture_output=True, text=True, timeout=300,
                )
                if done.returncode != 0:
                    pytest.fail(f"npm ci in {JS} failed:\n{done.stdout}\n{done.stderr}")
    return node


def load_glb(glb: bytes | Path) -> dict[str, Any]:
    """What GLTFLoader made of the GLB: {"meshes": [{name, vertices, triangles, normals, color,
    opacity, transparent}], "lines": [{name, segments, color}], "nodes": [three.js names],
    "gltf_nodes": [names in the file]}. Fails the test when three.js cannot parse it."""
    node = _three()
    with tempfile.TemporaryDirectory() as tmp:
        path = glb if isinstance(glb, Path) else Path(tmp) / "scene.glb"
        if not isinstance(glb, Path):
            path.write_bytes(glb)
        done = subprocess.run(
            [node, str(SCRIPT), str(path)], cwd=JS, capture_output=True, text=True, timeout=60
        )
    if done.returncode != 0:
        pytest.fail(f"three.js could not load the GLB:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def build_web_page() -> None:
    """scripts/build-web.sh, as `make up` runs it, once at a time (pytest-xdist workers)."""
    root = JS.parents[1]
    with open(root / "src/twinstack/web/.build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run(["bash", str(root / "scripts/build-web.sh")], capture_output=True,
                              text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"the web page did not build:\n{done.stdout}\n{done.stderr}", pytrace=False)
