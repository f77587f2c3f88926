"""The web page in a real browser (Debian's chromium driven by Playwright) against a real
platform: log in, list and create projects, a revoked token sends the page back to the login
form with a message, log out. The console stays free of errors."""

from __future__ import annotations

import base64
import fcntl
import io
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.platform_fixtures import PASSWORD, Platform, running_platform

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(shutil.which("chromium") is None,
                                reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    build_web_page()
    with running_platform(tmp_path_factory.mktemp("web"), "ada") as running:
        yield running


def build_web_page() -> None:
    """scripts/build-web.sh, as `make up` runs it, once at a time (pytest-xdist workers)."""
    with open(ROOT / "src/twinstack/web/.build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run(["bash", str(ROOT / "scripts/build-web.sh")], capture_output=True,
                              text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"the web page did not build:\n{done.stdout}\n{done.stderr}", pytrace=False)


def canvas_pixels(page) -> tuple[bytes, int]:
    """What the 3D view's canvas holds (PNG bytes), and how many of its pixels are not the
    background."""
    import numpy as np
    from PIL import Image

    url = page.evaluate("document.getElementById('view').toDataURL('image/png')")
    png = base64.b64decode(url.split(",", 1)[1])
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    background = pixels[0, 0]
    return png, int((np.abs(pixels - background).max(axis=2) > 24).sum())


@pytest.fixture
def page(platform: Platform) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            # the dev CA is the platform's own: a user imports it, the test trusts it this way
            context = browser.new_context(ignore_https_errors=True,
                                          viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.problems = []  # type: ignore[attr-defined]
            page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
            page.on("pageerror", lambda e: page.problems.append(str(e)))
            yield page
        finally:
            browser.close()


def log_in(page, user: str, password: str) -> None:
    page.get_by_label("User").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_log_in_create_a_project_lose_the_token_and_log_out(platform: Platform, page):
    from playwright.sync_api import expect

    page.goto(platform.url + "/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()

    log_in(page, "ada", "not her password")
    expect(page.get_by_role("alert")).to_contain_text("wrong user name or password")
    page.problems.clear()  # the browser logs the refused login's 401 itself

    log_in(page, "ada", PASSWORD)
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    expect(page.get_by_role("heading", name="Log in")).to_be_hidden()
    expect(page.get_by_text("No projects yet")).to_be_visible()
    page.get_by_label("Name").fill("cavity")
    page.get_by_label("Session type").select_option("3D simulation")
    page.get_by_role("button", name="Create project").click()
    row = page.locator("#project-rows tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("cavity3D simulationadaowner")

    # The same project through the Python client: one platform, one API.
    tw = platform.client("ada")
    assert [p["name"] for p in tw.projects()] == ["cavity"]

    # Revoke the page's token (as a logout elsewhere would): the next load asks to log in.
    tw.token = page.evaluate("sessionStorage.getItem('twinstack.token')")
    tw.logout()
    page.reload()
    expect(page.get_by_role("alert")).to_contain_text("expired or was revoked")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.problems.clear()  # the 401 of the revoked token

    log_in(page, "ada", PASSWORD)
    expect(page.locator("#project-rows tr")).to_have_count(1)
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("alert")).to_contain_text("You are logged out")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('twinstack.token')") is None
    assert page.problems == []


def test_opening_a_project_shows_its_services_starting_then_its_entities(platform: Platform,
                                                                         page):
    from playwright.sync_api import expect

    tw = platform.client("ada")
    project = tw.create_project("bracket", "3D simulation")
    page.goto(platform.url + "/")
    log_in(page, "ada", PASSWORD)
    page.get_by_role("button", name="Open bracket").click()
    expect(page.get_by_role("heading", name="bracket")).to_be_visible()
    for other in ("Log in", "Projects"):
        expect(page.get_by_role("heading", name=other)).to_be_hidden()
    services = page.locator("#services li")
    expect(services).to_have_count(5)  # model, modeling, the two meshers, visualization
    expect(page.locator("#session-state")).to_have_text("Session ready", timeout=60_000)
    expect(page.locator('#services li[data-status="ready"]')).to_have_count(5)
    expect(page.locator("#entities")).to_be_visible()
    expect(page.locator("#entity-rows tr")).to_have_count(0)
    _, empty = canvas_pixels(page)
    assert empty == 0  # nothing to draw yet

    # The page left; the session goes on. What the Python client adds, the page lists.
    page.get_by_role("button", name="Back to projects").click()
    with tw.open_session(project["id"]) as session:
        block = session.modeling.create("box", size=[1, 2, 3], name="block")
        page.get_by_role("button", name="Open bracket").click()
        expect(page.locator("#session-state")).to_have_text("Session ready")
        expect(page.locator("#entity-rows tr")).to_have_count(1)
        expect(page.locator("#entity-rows tr")).to_contain_text("block")
        expect(page.locator("#view")).to_have_attribute("data-parts", "block")
        box_shot, box_pixels = canvas_pixels(page)
        assert box_pixels > 5_000  # the box fills a good part of the fitted view

        # A boolean, made by another participant: reopened, the page draws the new solid.
        page.get_by_role("button", name="Back to projects").click()
        ball = session.modeling.create("sphere", radius=1.2, center=[0.5, 1, 3], name="ball")
        session.modeling.create("union", block, ball, name="capped")
        page.get_by_role("button", name="Open bracket").click()
        expect(page.locator("#view")).to_have_attribute("data-parts", "capped")
        capped_shot, capped_pixels = canvas_pixels(page)
        assert capped_pixels > 5_000 and capped_shot != box_shot
        page.get_by_role("button", name="Fit").click()
    assert page.problems == []
