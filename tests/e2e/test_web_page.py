"""The web page in a real browser (Debian's chromium driven by Playwright) against a real
platform (`twinstack up`): log in and out, projects, the project view (shapes, booleans,
parameters, history, meshing, files, materials, kriging, the solver, geochemistry), two users
live in one session, a relay restart, the admin view. The console stays free of errors. `make
screenshots` runs this file with TWINSTACK_SCREENSHOTS set to keep the pictures it takes."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.js_harness import build_web_page
from tests.platform_fixtures import (
    PASSWORD,
    Platform,
    running_platform,
    session_processes,
    wait_until,
)
from twinstack.client import ActionError

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(shutil.which("chromium") is None,
                                reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    build_web_page()
    with running_platform(tmp_path_factory.mktemp("web"), "ada") as running:
        yield running


@pytest.fixture
def shoot(tmp_path: Path):
    """Pictures of the page for `make screenshots`, which names their folder in
    TWINSTACK_SCREENSHOTS; otherwise they go to the test's temporary folder."""
    folder = Path(os.environ.get("TWINSTACK_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return lambda page, name: page.screenshot(path=str(folder / f"{name}.png"))


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
def browser_page(platform: Platform) -> Iterator:
    """Pages in browser contexts of their own (as two people's browsers), 1280x800, each
    recording console errors in `page.problems`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])

        def new_page():
            # the dev CA is the platform's own: a user imports it, the test trusts it this way
            context = browser.new_context(ignore_https_errors=True,
                                          viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.problems = []
            page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
            page.on("pageerror", lambda e: page.problems.append(str(e)))
            return page
        try:
            yield new_page
        finally:
            browser.close()


@pytest.fixture
def page(browser_page) -> Any:
    return browser_page()


def log_in(page, user: str, password: str) -> None:
    page.get_by_label("User", exact=True).fill(user)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()


def test_log_in_create_a_project_lose_the_token_and_log_out(platform: Platform, page):
    from playwright.sync_api import expect

    page.goto(platform.url + "/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    bundle = page.request.get(platform.url + "/web/app.js", headers={"Accept-Encoding": "gzip"})
    assert bundle.ok and bundle.headers["content-encoding"] == "gzip"  # 171 kB, not 675

    log_in(page, "ada", "not her password")
    expect(page.get_by_role("alert")).to_contain_text("wrong user name or password")
    page.problems.clear()  # the browser logs the refused login's 401 itself

    log_in(page, "ada", PASSWORD)
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    expect(page.get_by_role("heading", name="Log in")).to_be_hidden()
    expect(page.get_by_text("No projects yet")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("cavity")
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


def shape_and_pixels(page, parts: str) -> tuple[bytes, int]:
    """The view once it draws exactly these parts (names in alphabetical order)."""
    from playwright.sync_api import expect

    expect(page.locator("#view")).to_have_attribute("data-parts", parts, timeout=60_000)
    return canvas_pixels(page)


def add_shape(page, feature: str, name: str, *inputs: str, **parameters: str) -> None:
    from playwright.sync_api import expect

    toolbar = page.locator("#feature-form")
    toolbar.get_by_label("Feature").select_option(feature)
    for label, shape in zip(("First shape", "Second shape"), inputs, strict=False):
        toolbar.get_by_label(label).select_option(label=shape)
    for key, value in parameters.items():
        toolbar.get_by_label(key, exact=True).fill(value)
    toolbar.get_by_label("Shape name").fill(name)
    toolbar.get_by_role("button", name="Add").click()
    try:
        expect(page.locator("#tree")).to_contain_text(name, timeout=60_000)
    except AssertionError as missing:  # say what the page told the user, and its log
        said = page.locator("#message").text_content()
        log = page.locator("#log").text_content()
        raise AssertionError(f"{name} never showed; the page said {said!r}; log: {log}"
                             ) from missing


def open_in_page(page, name: str) -> None:
    from playwright.sync_api import expect

    page.get_by_role("button", name=f"Open {name}").click()
    expect(page.locator("#session-state")).to_have_text("Session ready", timeout=60_000)


def new_user_in_project(platform: Platform, page, user: str, project: str, session_type: str
                        ) -> tuple[Any, dict[str, Any]]:
    """A new user, a project of theirs, and the page logged in as them with it open: their
    client and the project."""
    platform.add_user(user)
    client = platform.client(user)
    made = client.create_project(project, session_type)
    page.goto(platform.url + "/")
    log_in(page, user, PASSWORD)
    open_in_page(page, project)
    return client, made


def test_build_edit_undo_mesh_share_reconnect(platform: Platform, page, browser_page, shoot):
    """The issue's main flow: two primitives and a boolean drawn, a radius edited in the
    property panel, undone in the history graph, both meshers' statistics; a viewer in a
    second browser sees edits live and cannot edit; a relay restart is survived; log out."""
    from playwright.sync_api import expect

    platform.add_user("bea")
    page.goto(platform.url + "/")
    shoot(page, "login")
    log_in(page, "ada", PASSWORD)
    page.get_by_label("Name", exact=True).fill("widget")
    page.get_by_label("Session type").select_option("3D simulation")
    page.get_by_role("button", name="Create project").click()
    page.get_by_role("button", name="Share widget").click()
    dialog = page.locator("#share-dialog")
    dialog.get_by_label("Who").fill("bea")
    dialog.get_by_label("Role").select_option("viewer")
    dialog.get_by_role("button", name="Share").click()
    expect(page.get_by_role("alert")).to_contain_text("Done: share widget")

    page.get_by_role("button", name="Open widget").click()
    expect(page.locator("#services li")).to_have_count(6)
    expect(page.locator("#session-state")).to_have_text("Session ready", timeout=60_000)
    expect(page.locator('#services li[data-status="ready"]')).to_have_count(6)
    _, empty = canvas_pixels(page)
    assert empty == 0  # nothing to draw yet

    add_shape(page, "box", "block", size="2, 2, 2")
    add_shape(page, "sphere", "ball", radius="1.2", center="2, 2, 2")
    two_shot, two_pixels = shape_and_pixels(page, "ball,block")
    add_shape(page, "union", "capped", "block", "ball")
    union_shot, union_pixels = shape_and_pixels(page, "capped")
    assert min(two_pixels, union_pixels) > 5_000 and union_shot != two_shot
    expect(page.locator("#tree li[data-id]")).to_have_count(3)

    # The sphere's radius, in the property panel: the union is rebuilt and drawn again.
    page.locator("#tree").get_by_role("button", name="ball").click()
    panel = page.locator("#property-form")
    panel.get_by_label("radius", exact=True).fill("0.6")
    drawn = page.locator("#view").get_attribute("data-drawn")
    panel.get_by_role("button", name="Apply").click()
    expect(page.locator("#view")).not_to_have_attribute("data-drawn", drawn or "")
    small_shot, _ = shape_and_pixels(page, "capped")
    assert small_shot != union_shot
    graph = page.locator("#history-graph")
    expect(graph).to_have_attribute("data-states", "5")  # the empty project first
    head = graph.get_attribute("data-head")
    expect(graph.locator(".state.head")).to_contain_text("ball: radius=0.6")

    # Undo: the head moves back in the graph, the larger ball is drawn again.
    drawn = page.locator("#view").get_attribute("data-drawn")
    page.get_by_role("button", name="Undo").click()
    expect(page.locator("#view")).not_to_have_attribute("data-drawn", drawn or "")
    expect(graph).not_to_have_attribute("data-head", head or "")
    expect(graph.locator(".state.head")).to_contain_text("capped: union of block and ball")
    undone_shot, _ = shape_and_pixels(page, "capped")
    assert undone_shot != small_shot
    expect(page.get_by_role("button", name="Redo")).to_be_enabled()

    # Both meshers, with their statistics.
    page.get_by_role("button", name="Cartesian mesh", exact=True).click()
    expect(page.locator("#mesh-stats")).to_contain_text("Cells", timeout=60_000)
    expect(page.locator("#mesh-stats")).to_contain_text("cartesian")
    page.get_by_label("Largest element").fill("0.5")
    page.get_by_role("button", name="Tetrahedral mesh", exact=True).click()
    expect(page.locator("#mesh-stats")).to_contain_text("Tetrahedra", timeout=120_000)
    expect(page.locator("#mesh-stats")).to_contain_text("Min dihedral angle")
    expect(graph).to_have_attribute("data-states", "7")

    # The tet mesh in the view (cut by the section plane on the server) and its histogram.
    page.locator("#tree").get_by_role("button", name=re.compile("^tet mesh")).click()
    histogram = page.locator("#property-form img.mesh-picture")
    expect(histogram).to_have_attribute("src", re.compile("^blob:"), timeout=60_000)
    assert histogram.evaluate("img => img.decode().then(() => img.naturalWidth)") == 800
    page.get_by_role("button", name="Draw the mesh in the view").click()
    expect(page.locator("#view")).to_have_attribute("data-drawn", re.compile("^mesh:.*:null$"),
                                                    timeout=60_000)
    _, mesh_pixels = canvas_pixels(page)
    page.locator("#section-axis").select_option("y")
    expect(page.locator("#view")).to_have_attribute("data-drawn", re.compile(r"^mesh:.*normal"),
                                                    timeout=60_000)
    _, cut_pixels = canvas_pixels(page)
    assert mesh_pixels > 5_000 and cut_pixels > 2_000
    shoot(page, "meshing")
    page.locator("#section-axis").select_option("")
    page.get_by_role("button", name="Draw the shapes").click()
    shape_and_pixels(page, "capped")

    # Bea, a viewer, in a second browser context: she sees everything and edits nothing.
    other = browser_page()
    other.goto(platform.url + "/")
    log_in(other, "bea", PASSWORD)
    open_in_page(other, "widget")
    expect(other.locator("#role")).to_have_text("viewer")
    expect(other.locator("#feature-form").get_by_role("button", name="Add")).to_be_disabled()
    expect(other.get_by_role("button", name="Undo")).to_be_disabled()
    expect(other.get_by_role("button", name="Cartesian mesh", exact=True)).to_be_disabled()
    shape_and_pixels(other, "capped")
    add_shape(page, "cylinder", "post", radius="0.3", height="2", base="-2, 0, 0")
    shape_and_pixels(other, "capped,post")  # live, with no reload
    other.get_by_role("tab", name="Log").click()
    shoot(other, "viewer-live")
    expect(other.locator("#tree")).to_contain_text("post")
    expect(other.locator("#log")).to_contain_text("post: cylinder", use_inner_text=False)
    bea = platform.client("bea")
    with bea.open_session(bea.projects()[0]["id"]) as session, \
            pytest.raises(ActionError) as refused:  # and the platform refuses anyway
        session.modeling.create("box", size=[1, 1, 1])
    assert refused.value.status == 403

    # The relay restarts under both pages: they say so, reconnect and carry on.
    page.locator("#feature-form").get_by_label("Shape name").fill("typed before the cut")
    os.kill(platform.pid("relay"), signal.SIGKILL)
    for each in (page, other):
        expect(each.locator("#project")).to_have_attribute("data-reconnects", "1",
                                                           timeout=60_000)
        # the browser logs each refused try itself while the relay is away
        assert all("WebSocket connection to" in p for p in each.problems), each.problems
        each.problems.clear()
        expect(each.locator("#log")).to_contain_text("connection lost", use_inner_text=False)
        expect(each.locator("#link-state")).to_be_hidden()
    expect(page.locator("#feature-form").get_by_label("Shape name")).to_have_value(
        "typed before the cut")  # nothing typed is lost
    add_shape(page, "box", "plate", size="1, 1, 0.2", corner="0, 0, -1")
    shape_and_pixels(page, "capped,plate,post")
    shape_and_pixels(other, "capped,plate,post")

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    other.get_by_role("button", name="Log out").click()
    expect(other.get_by_role("alert")).to_contain_text("You are logged out")
    assert page.problems == [] and other.problems == []


def test_admin_view_rename_and_delete(platform: Platform, page, shoot):
    from playwright.sync_api import expect

    platform.add_user("root", admin=True)
    root = platform.client("root")
    survey = root.create_project("survey", "data analysis")
    live = root.open_session(survey["id"])  # a live session for the admin view
    live.detach()
    page.goto(platform.url + "/")
    log_in(page, "root", PASSWORD)
    admin = page.locator("#admin")
    expect(admin).to_be_visible()
    expect(admin.locator("#user-rows")).to_contain_text("rootadminactive")
    expect(admin.locator("#node-rows tr")).to_have_count(1)
    expect(admin.locator("#session-rows")).to_contain_text(live.id[:8] + "survey")
    expect(admin.locator("#session-rows")).to_contain_text("kriging")
    shoot(page, "projects-and-admin")

    page.get_by_role("button", name="Rename survey").click()
    page.locator("#rename-dialog").get_by_label("New name").fill("survey north")
    page.locator("#rename-dialog").get_by_role("button", name="Rename").click()
    expect(page.locator("#project-rows")).to_contain_text("survey north")

    page.get_by_role("button", name="Delete survey north").click()
    page.locator("#delete-dialog").get_by_role("button", name="Cancel").click()
    expect(page.locator("#project-rows tr")).to_have_count(1)
    page.get_by_role("button", name="Delete survey north").click()
    page.locator("#delete-dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_text("No projects yet")).to_be_visible()
    expect(admin.locator("#session-rows tr")).to_have_count(0)  # its session was closed
    assert root.projects() == []

    # Not an administrator: no admin view, and auth refuses the listing anyway.
    page.get_by_role("button", name="Log out").click()
    log_in(page, "ada", PASSWORD)
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    expect(admin).to_be_hidden()
    with pytest.raises(ActionError) as refused:
        platform.client("ada").accounts()
    assert refused.value.status == 403 and "administrators" in refused.value.message
    assert page.problems == []


def test_kriging_points_from_a_csv_file_make_a_map(platform: Platform, page, shoot):
    import numpy as np
    from playwright.sync_api import expect

    new_user_in_project(platform, page, "cy", "wells", "data analysis")
    expect(page.get_by_role("tab", name="Kriging")).to_have_attribute("aria-selected", "true")
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 100, (40, 2))
    rows = "\n".join(f"{x:.3f},{y:.3f},{np.sin(x / 20) + y / 50:.4f}" for x, y in xy)
    points = page.get_by_label("Points (CSV: x, y, value)")
    points.set_input_files({"name": "bad.csv", "mimeType": "text/csv",
                            "buffer": b"x,y,value\n1,2,3\n4,five,6\n"})
    page.get_by_role("button", name="Krige").click()
    expect(page.get_by_role("alert")).to_contain_text("bad.csv: line 3 is not")
    points.set_input_files({"name": "wells.csv", "mimeType": "text/csv",
                            "buffer": f"x,y,value\n{rows}\n".encode()})
    page.get_by_role("button", name="Krige").click()
    expect(page.locator("#kriging-map")).to_have_attribute("data-points", "40")
    expect(page.get_by_role("alert")).to_contain_text("40 points kriged onto a 80 \u00d7 80 grid")
    for absent in ("#tree-panel", "#view-panel", "#feature-form", "#side"):  # no model here
        expect(page.locator(absent)).to_be_hidden()
    colours = page.evaluate("""() => {
        const c = document.getElementById('kriging-map');
        const d = c.getContext('2d').getImageData(0, 0, c.width - 70, c.height).data;
        const seen = new Set();
        for (let i = 0; i < d.length; i += 4 * 97) {
            seen.add(d[i] * 65536 + d[i + 1] * 256 + d[i + 2]);
        }
        return seen.size;
    }""")
    assert colours > 20  # a field of colours, not a flat fill
    shoot(page, "kriging")
    assert page.problems == []


def test_files_materials_visibility_section_pick_and_keyboard(platform: Platform, page,
                                                               tmp_path: Path, shoot):
    from playwright.sync_api import expect

    dee, project = new_user_in_project(platform, page, "dee", "bench", "3D simulation")
    add_shape(page, "box", "block", size="2, 2, 2")
    add_shape(page, "sphere", "ball", radius="0.5", center="5, 5, 5")
    shape_and_pixels(page, "ball,block")

    # Hide the ball; the block fills the fitted view and a click on it selects it.
    page.get_by_label("Show ball").uncheck()
    shape_and_pixels(page, "block")
    page.get_by_role("button", name="Fit").click()
    page.locator("#view").click(position={"x": 340, "y": 192})
    expect(page.locator('#tree li[aria-selected="true"]')).to_have_text("block")
    expect(page.locator("#property-form")).to_contain_text("Volume8")
    page.locator("#property-form").get_by_text("Edges (12)").click()  # numbered for fillets
    expect(page.locator("#property-form .edges li")).to_have_count(12)
    expect(page.locator("#property-form .edges li").first).to_contain_text("length 2 at (")
    _, whole = canvas_pixels(page)
    page.locator("#section-axis").select_option("z")
    page.get_by_label("Section position").fill("0.2")
    _, cut = canvas_pixels(page)
    assert cut != whole

    # A refused feature: the platform's message, and what was typed stays for a retry.
    add_shape_form = page.locator("#feature-form")
    add_shape_form.get_by_label("Feature").select_option("sphere")
    add_shape_form.get_by_label("radius", exact=True).fill("-1")
    add_shape_form.get_by_label("Shape name").fill("bad ball")
    add_shape_form.get_by_role("button", name="Add").click()
    expect(page.get_by_role("alert")).to_contain_text("radius")
    expect(page.get_by_role("alert")).to_have_class("error")
    expect(add_shape_form.get_by_label("Shape name")).to_have_value("bad ball")
    expect(add_shape_form.get_by_label("radius", exact=True)).to_have_value("-1")
    add_shape(page, "fillet", "rounded", "block", radius="0.2", edges="all")
    shape_and_pixels(page, "rounded")

    # Export the block as STEP and import the file back.
    page.get_by_role("tab", name="Files").click()
    page.get_by_label("Format").select_option("step")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export the selected shape").click()
    step = tmp_path / "block.step"
    download.value.save_as(step)
    assert b"ISO-10303-21" in step.read_bytes()[:200]
    page.get_by_label("File (STEP, BREP, STL, OBJ)").set_input_files(str(step))
    page.get_by_label("Import as").fill("copy")
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#tree")).to_contain_text("copy")

    # A material, given to the block in its properties.
    page.get_by_role("tab", name="Materials").click()
    page.get_by_label("Material name").fill("FR4")
    page.get_by_label("εr").fill("4.4")
    page.get_by_role("button", name="Create material").click()
    expect(page.locator("#tree")).to_contain_text("FR4")
    page.locator("#tree").get_by_role("button", name="block").click()
    page.locator("#property-form").get_by_label("Material").select_option(label="FR4")
    page.locator("#property-form").get_by_role("button", name="Apply").click()
    with dee.open_session(project["id"]) as session:
        wait_until(lambda: session.model.find("block")["properties"].get("material")
                   == session.model.find("FR4")["id"], what="the block's material")
    shoot(page, "project")

    # The keyboard alone: Ctrl+Z undoes (the material), a state of the graph checks out.
    graph = page.locator("#history-graph")
    head = graph.get_attribute("data-head")
    page.locator("#view").focus()
    page.keyboard.press("Control+z")
    expect(graph).not_to_have_attribute("data-head", head or "")
    block_only = graph.locator(".state").nth(1)  # oldest first: the empty project, the block
    expect(block_only).to_contain_text("block: box")
    block_only.focus()
    page.keyboard.press("Enter")
    expect(graph).to_have_attribute("data-head", block_only.get_attribute("data-state") or "")
    shape_and_pixels(page, "block")
    expect(page.locator("#tree")).not_to_contain_text("ball")

    # A compute service killed: the page shows it restarting, counts it, and goes on.
    with dee.open_session(project["id"]) as session:
        [visualization] = [pid for pid in session_processes(session.id)
                           if b"visualization" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    os.kill(visualization, signal.SIGKILL)
    page.get_by_role("tab", name="Session").click()
    expect(page.locator("#session-facts")).to_contain_text("visualization \u00d71",
                                                           timeout=60_000)
    expect(page.locator('#services [data-service="visualization"]')).to_have_attribute(
        "data-status", "ready", timeout=60_000)
    expect(page.locator("#session-facts")).to_contain_text("Nodelocal")
    page.get_by_label("Show block").uncheck()
    shape_and_pixels(page, "")
    page.get_by_label("Show block").check()
    shape_and_pixels(page, "block")
    assert page.problems == []


def test_solver_panel_sets_up_runs_and_shows_results(platform: Platform, page, shoot):
    """A parallel-plate line drawn, meshed and simulated from the page: the setup form, the
    run with its progress bar, and the results drawn (S-parameters and probe plots, |E| on a
    plane with its colour bar)."""
    from playwright.sync_api import expect

    new_user_in_project(platform, page, "eve", "line", "3D simulation")
    add_shape(page, "box", "line", size="0.01, 0.01, 0.2")
    page.get_by_role("tab", name="Meshing").click()
    page.get_by_label("Cell size").fill("0.002")
    page.get_by_role("button", name="Cartesian mesh").click()
    expect(page.locator("#mesh-stats")).to_contain_text("2,500", timeout=60_000)  # a compile

    page.get_by_role("tab", name="Solver").click()
    form = page.locator("#solver-form")
    expect(form.get_by_label("Mesh")).to_contain_text("cartesian mesh 5x5x100")
    form.get_by_label("From (GHz)").fill("1.5")
    form.get_by_label("to (GHz)").fill("4.5")
    for face, kind in (("x-", "pmc"), ("x+", "pmc"), ("y-", "pec"), ("y+", "pec")):
        form.locator(f"[name='face_{face}']").select_option(kind)
    form.get_by_label("Port from (x, y, z)").fill("0, 0, 0.1")
    form.get_by_label("to (x, y, z)").fill("0.01, 0.01, 0.1")
    form.get_by_label("along").select_option("y")
    form.get_by_label("R (Ω)").fill("188.365")
    form.get_by_label("Probe at (x, y, z)").fill("0.004, 0.006, 0.15")
    form.get_by_label("|E| on the plane").select_option("x")
    form.get_by_label("at", exact=True).fill("0.004")
    form.get_by_label("Duration (ns)").fill("6")
    form.get_by_label("Simulation name").fill("matched line")
    form.get_by_role("button", name="Set up").click()
    expect(page.get_by_role("alert")).to_contain_text("matched line: 2,500 cells")
    expect(page.locator("#tree")).to_contain_text("matched line")

    run = page.locator("#solver-run")
    expect(run.get_by_label("Simulation")).to_contain_text("matched line")
    run.get_by_role("button", name="Run").click()
    expect(page.locator("#solver-status")).to_contain_text("done: 3 results", timeout=60_000)
    progress = page.locator("#solver-progress")
    assert progress.get_attribute("data-status") == "done"
    assert progress.evaluate("p => p.value === p.max && p.max > 1000")
    figures = page.locator("#solver-results figure")
    expect(figures).to_have_count(3)
    expect(page.locator("#solver-results figure[data-loaded=true]")).to_have_count(3)
    for name in ("S-parameters", "probe signals", "|E| on plane at 3 GHz"):
        expect(page.locator("#solver-results")).to_contain_text(name)
    page.locator("#solver-results").scroll_into_view_if_needed()
    shoot(page, "solver")
    assert page.problems == []


def test_geochemistry_panel_speciates_maps_runs_plots_and_points_at_errors(platform: Platform,
                                                                           page, shoot):
    """Samples from a CSV file shown, speciated and their calcite saturation index kriged into
    a map; the editor's reaction path run with its table and plot; a long path's progress and
    Cancel; a refused input's line selected in the editor. Numbers are PHREEQC's own."""
    from playwright.sync_api import expect

    from tests.geochem_samples import samples_csv
    from twinstack.sim import geochem

    fay, project = new_user_in_project(platform, page, "fay", "aquifer", "geochemistry")
    expect(page.get_by_role("tab", name="Geochemistry")).to_have_attribute("aria-selected", "true")
    for absent in ("#view-panel", "#feature-form"):  # no shapes in this session type
        expect(page.locator(absent)).to_be_hidden()
    expect(page.get_by_role("combobox", name="Database", exact=True)).to_have_value("phreeqc.dat")

    csv = samples_csv(300)
    page.get_by_label("Samples (CSV: name, x, y, temp, pH, elements)").set_input_files(
        {"name": "wells.csv", "mimeType": "text/csv", "buffer": csv.encode()})
    preview = page.locator("#geochem-samples-table table")
    expect(preview.locator("caption")).to_have_text("wells.csv: 300 samples, the first 10 shown")
    expect(preview.locator("tbody tr")).to_have_count(10)
    page.get_by_label("Phases", exact=True).fill("Calcite, Gypsum")
    page.get_by_role("button", name="Speciate").click()
    expect(page.get_by_role("alert")).to_contain_text("300 samples speciated with phreeqc.dat")
    results = page.locator("#geochem-results select")
    expect(results.locator("option:checked")).to_have_text(
        "speciation of wells.csv (300 samples)")
    table = page.locator("#geochem-table table")
    expect(table.locator("tbody tr")).to_have_count(200)
    expect(page.locator("#geochem-facts")).to_contain_text("300 rows · phreeqc.dat (sha256 ")
    columns = table.locator("thead th").all_inner_texts()
    first = dict(zip(columns, table.locator("tbody tr").first.locator("td").all_inner_texts(),
                     strict=True))
    direct = geochem.Engine(geochem.built_in_text("phreeqc.dat"))
    sample = dict(zip(csv.splitlines()[0].split(","), csv.splitlines()[1].split(","),
                      strict=True))
    speciated = geochem.speciate(direct, [{k: float(v) for k, v in sample.items()
                                           if k != "name"}], ["Calcite", "Gypsum"])
    expected = dict(zip(speciated.columns, speciated.rows[0], strict=True))
    assert first["sample"] == "w0"
    for column in ("pH", "si_Calcite", "si_Gypsum"):
        assert float(first[column]) == pytest.approx(expected[column], abs=1e-4)

    chart = page.locator("#geochem-map")  # local kriging: numba's kernel, compiled if not cached
    expect(chart).to_have_attribute("data-points", "300", timeout=60_000)
    expect(chart).to_have_attribute("data-column", "si_Calcite")
    east_minus_west = page.evaluate("""() => {
        const c = document.getElementById('geochem-map');
        const d = c.getContext('2d').getImageData(0, 0, c.width - 70, c.height).data;
        const w = c.width - 70;
        const light = (x) => { let s = 0; for (let y = 0; y < c.height; y += 7) {
            const i = (y * w + x) * 4; s += d[i] + d[i + 1] + d[i + 2]; } return s; };
        return light(w - 3) - light(2);
    }""")
    assert east_minus_west > 0  # more calcium to the east: nearer yellow (saturated)
    page.locator("#geochem-map-panel").scroll_into_view_if_needed()
    shoot(page, "geochemistry-map")

    editor = page.get_by_label("Input", exact=True)
    path_input = editor.input_value()
    assert "REACTION 1" in path_input  # the editor starts with a path to run as it is
    page.get_by_label("Run name", exact=True).fill("calcite and CO2")
    page.get_by_role("button", name="Run", exact=True).click()
    status = page.locator("#geochem-status")
    expect(status).to_have_text("done: 2 results", timeout=60_000)
    expect(results.locator("option:checked")).to_have_text(
        "calcite and CO2: selected output 1 (21 rows)")
    expect(page.locator("#geochem-plot-panel")).to_be_visible()
    plot = page.locator("#geochem-plot")
    expect(plot.get_by_role("combobox", name="Along")).to_have_value("step")
    plot.get_by_role("listbox", name="Plot").select_option(["pH", "si_Calcite"])
    expect(page.locator("#geochem-chart")).to_have_attribute("data-points", "40")  # 20 steps each
    [table_direct] = direct.run(path_input).tables
    last = table.locator("tbody tr").last.locator("td").all_inner_texts()
    assert [float(v) for v in last] == pytest.approx(table_direct.rows[-1], rel=1e-4)
    page.locator("#geochem-plot-panel").scroll_into_view_if_needed()
    shoot(page, "geochemistry-path")

    # a long path: its progress, then Cancel; nothing is committed
    head = fay.open_session(project["id"])
    with head as session:
        before = session.model.head()
        editor.fill(path_input.replace("0.02 mol in 20 steps", "1 mol in 5000000 steps"))
        page.get_by_role("button", name="Run", exact=True).click()
        expect(status).to_contain_text("of 5,000,000 rows written", timeout=60_000)
        expect(page.locator("#geochem-progress")).to_have_attribute("data-status", "running")
        page.get_by_role("button", name="Cancel").click()
        expect(status).to_have_text("cancelled: cancelled by a user", timeout=60_000)
        assert session.model.head() == before

    # a keyword block goes in at the cursor's line; a refused input's line is selected
    editor.fill("")
    page.get_by_role("combobox", name="Insert a keyword").select_option("SOLUTION")
    assert editor.input_value().startswith("SOLUTION 1\n    units mg/L")
    editor.fill("SOLUTION 1\n    temp 25\n    Ca 40\n    pH seven\nEND\n")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(status).to_contain_text("failed: PHREEQC: line 4", timeout=60_000)
    expect(page.locator("#geochem-error")).to_have_attribute("data-line", "4")
    assert editor.evaluate("e => e.value.slice(e.selectionStart, e.selectionEnd)") == \
        "    pH seven"
    expect(page.locator("#geochem-cursor")).to_have_text("line 4")
    assert page.problems == []
