"""checkov in its own venv under the user cache (its pinned dependencies clash with the
project's), made on first use and then reused, one maker at a time (a lock).

`make test` runs this file in the background as it starts (`python3
tests/deploy/checkov_venv.py`), so that pip's downloads overlap lint and the first tests
instead of holding up test_manifests.py.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

CHECKOV_VERSION = "3.3.30"


def checkov_executable() -> Path:
    """The checkov program; TWINSTACK_CHECKOV names another. RuntimeError if pip fails."""
    if override := os.environ.get("TWINSTACK_CHECKOV"):
        return Path(override)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "twinstack"
    venv = cache / f"checkov-{CHECKOV_VERSION}"
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "checkov.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
            install = subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                 "--disable-pip-version-check", f"checkov=={CHECKOV_VERSION}"],
                capture_output=True, text=True, timeout=900, check=False)
            if install.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                raise RuntimeError(f"could not install checkov {CHECKOV_VERSION} into {venv}:"
                                   f"\n{install.stdout}\n{install.stderr}")
            (venv / ".complete").touch()
    return venv / "bin" / "checkov"


if __name__ == "__main__":
    print(checkov_executable())
