"""The web page's first load and first drawing, in Debian's chromium (Playwright) against a
local `twinstack up` (127.0.0.1 only, a temporary directory removed afterwards).

Per run, a new browser context (an empty cache, as a first visit):
* `dom_content_loaded_s`: navigation start → DOMContentLoaded (HTML, CSS and the module
  script fetched and run);
* `interactive_s`: navigation start → the login form shown and focused (the page has asked
  gss for `info` and can be used);
* `transferred_bytes`: what went over the wire for it (gzip where the browser accepts it);
* then, logged in, a 3D project holding one box: the click on Open → the box drawn
  (`first_draw_s`: session start, scene tessellated, GLB fetched and drawn).
`reload_s`: the same context loads the page again (revalidated from its cache).

Output (stdout, JSON): medians and samples of each, the bundle's size on disk (plain and
gzip), and the machine. Run: `.venv/bin/python benchmarks/web_page.py --runs 10`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from session_start import (
    PASSWORD,
    USER,
    add_twinstack_user,
    log,
    machine,
    summarize,
    twinstack_up,
)

from twinstack.client import Client

STATIC = Path(__file__).resolve().parents[1] / "src/twinstack/web/static"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

INTERACTIVE = """() => new Promise((resolve) => {
  const ready = () => !document.getElementById('login').hidden
    && document.activeElement === document.querySelector('#login input[name=user]');
  const check = () => ready() ? resolve(performance.now() / 1000) : requestAnimationFrame(check);
  check();
})"""
TRANSFERRED = """() => performance.getEntriesByType('navigation')
  .concat(performance.getEntriesByType('resource'))
  .reduce((sum, e) => sum + e.transferSize, 0)"""
DOM_LOADED = """() =>
  performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd / 1000"""


def first_visit(browser: Any, url: str) -> dict[str, float]:
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(url, wait_until="commit")
        interactive = page.evaluate(INTERACTIVE)
        page.wait_for_load_state("load")
        visit = {"dom_content_loaded_s": page.evaluate(DOM_LOADED), "interactive_s": interactive,
                 "transferred_bytes": page.evaluate(TRANSFERRED)}
        started = time.perf_counter()
        page.reload(wait_until="commit")
        page.evaluate(INTERACTIVE)
        visit["reload_s"] = time.perf_counter() - started
        return visit
    finally:
        context.close()


def first_draw(browser: Any, url: str, project: str) -> float:
    from playwright.sync_api import expect

    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(url)
        page.get_by_label("User", exact=True).fill(USER)
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        opening = page.get_by_role("button", name=f"Open {project}")
        opening.wait_for()
        started = time.perf_counter()
        opening.click()
        expect(page.locator("#view")).to_have_attribute("data-parts", "block", timeout=120_000)
        elapsed = time.perf_counter() - started
        page.get_by_role("button", name="Back to projects").click()
        return elapsed
    finally:
        context.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    bundle = STATIC / "app.js"
    if not bundle.exists():
        raise SystemExit("the page is not built: run scripts/build-web.sh (or make web) first")
    with tempfile.TemporaryDirectory(prefix="twinstack-web-bench-") as tmp:
        workdir = Path(tmp)
        data = workdir / "data"
        with twinstack_up(data, workdir / "twinstack-up.log") as (port, _):
            add_twinstack_user(data)
            url = f"https://127.0.0.1:{port}/"
            with Client(url.rstrip("/"), ca=data / "pki" / "ca.pem") as tw, \
                    sync_playwright() as playwright:
                tw.login(USER, PASSWORD)
                browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                     args=["--no-sandbox"])
                visits = [first_visit(browser, url) for _ in range(args.runs + 1)][1:]
                draws = []
                for run in range(args.runs):
                    project = tw.create_project(f"bench-{run}", "3D simulation")
                    with tw.open_session(project["id"]) as session:
                        session.modeling.create("box", size=[1, 2, 3], name="block")
                        session.close()
                    draws.append(first_draw(browser, url, f"bench-{run}"))
                    log(f"run {run + 1}/{args.runs}: first draw {draws[-1]:.3f} s")
                browser.close()
    result = {
        "runs": args.runs, "machine": machine(), "chromium": CHROMIUM,
        "bundle_bytes": bundle.stat().st_size,
        "bundle_gzip_bytes": (STATIC / "app.js.gz").stat().st_size,
        **{key: summarize([v[key] for v in visits])
           for key in ("dom_content_loaded_s", "interactive_s", "reload_s")},
        "transferred_bytes": int(sorted(v["transferred_bytes"] for v in visits)[len(visits) // 2]),
        "first_draw_s": summarize(draws),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
