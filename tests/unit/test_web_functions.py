"""The web page's pure functions (parameter parsing, history lanes, CSV points, the colour
map, the solver form, samples files, input lines, plot ticks) under node's test runner:
tests/js/page_functions.test.mjs imports the page's own modules, unbundled."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.js_harness import tool

TESTS = Path(__file__).resolve().parents[1] / "js" / "page_functions.test.mjs"


def test_the_pages_functions_under_node():
    done = subprocess.run([tool("node"), "--test", str(TESTS)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "# pass 12" in done.stdout and "# fail 0" in done.stdout
