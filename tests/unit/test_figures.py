"""Slices against analytic fields, pictures read back pixel by pixel, reproducible bytes."""

from __future__ import annotations

import io
import itertools
import re

import matplotlib
import numpy as np
import pytest
from matplotlib.image import imread

from twinstack.sim.figures import (
    NAN_COLOR,
    Series,
    Slice,
    SliceError,
    cartesian_slice,
    histogram_plot,
    plot,
    plot_data,
    slice_data,
    slice_png,
    tet_slice,
)

X = np.array([0.0, 0.5, 1.5, 2.0])  # uneven cell boundaries
Y = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
Z = np.array([0.0, 1.0, 2.0])


def field(x, y, z):
    return x + 2 * y + 3 * z


def centres(c: np.ndarray) -> np.ndarray:
    return (c[1:] + c[:-1]) / 2


def test_cartesian_slice_of_nodal_values_interpolates_exactly():
    nodal = field(*np.meshgrid(X, Y, Z, indexing="ij"))
    s = cartesian_slice(X, Y, Z, nodal, "z", 1.3, name="T", unit="K")
    assert s.values.shape == (len(Y), len(X))  # rows along v = y, columns along u = x
    np.testing.assert_allclose(s.values, field(X[None, :], Y[:, None], 1.3), atol=1e-12)
    assert s.u_edges is None  # values at points
    assert (s.u_label, s.v_label, s.title) == ("x (m)", "y (m)", "T at z = 1.3 m")
    s = cartesian_slice(X, Y, Z, nodal, "y", 2.25)  # u = x, v = z
    np.testing.assert_allclose(s.values, field(X[None, :], 2.25, Z[:, None]), atol=1e-12)
    s = cartesian_slice(X, Y, Z, nodal, "x", 0.2)  # u = y, v = z
    np.testing.assert_allclose(s.values, field(0.2, Y[None, :], Z[:, None]), atol=1e-12)
    # the domain's ends are inside
    np.testing.assert_allclose(
        cartesian_slice(X, Y, Z, nodal, "z", 2.0).values, field(X[None, :], Y[:, None], 2.0)
    )


def test_cartesian_slice_of_cell_values_takes_the_cut_layer():
    cx, cy, cz = centres(X), centres(Y), centres(Z)
    cell = field(*np.meshgrid(cx, cy, cz, indexing="ij"))
    for position, layer in ((0.3, 0), (1.0, 1), (1.7, 1), (2.0, 1)):  # a face: the upper cell
        s = cartesian_slice(X, Y, Z, cell, "z", position)
        np.testing.assert_allclose(s.u, cx)
        assert s.u_edges is not None and s.v_edges is not None  # drawn as the cells they are
        np.testing.assert_array_equal(s.u_edges, X)
        np.testing.assert_array_equal(s.v_edges, Y)
        np.testing.assert_allclose(s.values, field(cx[None, :], cy[:, None], cz[layer]))
    s = cartesian_slice(X, Y, Z, cell, "x", 1.6)  # cell boundaries 0, 0.5, 1.5, 2
    np.testing.assert_allclose(s.values, field(cx[2], cy[None, :], cz[:, None]))


def test_cartesian_slice_of_a_vector_field_is_its_magnitude():
    nodal = field(*np.meshgrid(X, Y, Z, indexing="ij"))
    vector = nodal[..., None] * np.array([3.0, 0.0, -4.0])
    s = cartesian_slice(X, Y, Z, vector, "z", 0.5, name="u", unit="m/s")
    np.testing.assert_allclose(s.values, 5 * np.abs(field(X[None, :], Y[:, None], 0.5)))


def test_cartesian_slice_of_one_planes_nodes_draws_them_as_they_are():
    """A solver's plane monitor records one plane: values[i, k] at x[i], z[k] for y = 1."""
    plane = field(X[:, None], 1.0, Z[None, :])
    s = cartesian_slice(X, Y, Z, plane, "y", 1.0, name="|E|")
    np.testing.assert_array_equal(s.u, X)
    np.testing.assert_array_equal(s.v, Z)
    np.testing.assert_allclose(s.values, plane.T)
    assert s.u_edges is None and s.title == "|E| at y = 1 m"


def test_cartesian_slice_refuses_a_position_outside_and_wrong_shapes():
    cell = np.zeros((3, 4, 2))
    with pytest.raises(SliceError, match=re.escape("y in [0, 4]")):
        cartesian_slice(X, Y, Z, cell, "y", 4.5)
    with pytest.raises(ValueError, match="cell-centred"):
        cartesian_slice(X, Y, Z, np.zeros((3, 4, 3)), "z", 1)
    with pytest.raises(ValueError, match="axis"):
        cartesian_slice(X, Y, Z, cell, "w", 1)


def kuhn_boxes(cubes: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit cubes at the given integer corners, 6 tets each (shared nodes), and the cube of
    each tet."""
    corner = np.array([[k & 1, k >> 1 & 1, k >> 2 & 1] for k in range(8)])
    local = [[0, 1 << a, (1 << a) | (1 << b), 7] for a, b, _ in itertools.permutations(range(3))]
    all_points = np.concatenate([corner + np.array(c) for c in cubes])
    points, inverse = np.unique(all_points, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    tets = np.concatenate([inverse[8 * i + np.array(local)] for i in range(len(cubes))])
    return points.astype(float), tets, np.repeat(np.arange(len(cubes)), 6)


# An L: the 2 x 2 x 1 block without its cube at x, y in [1, 2]
L_POINTS, L_TETS, L_CUBE = kuhn_boxes([(0, 0, 0), (1, 0, 0), (0, 1, 0)])


def test_tet_slice_reproduces_a_linear_nodal_field_and_leaves_the_outside_empty():
    nodal = field(*L_POINTS.T)
    s = tet_slice(L_POINTS, L_TETS, nodal, (0.3, 0.3, 0.45), (0, 0, 2), resolution=41)
    assert s.values.shape == (41, 41)
    np.testing.assert_allclose(s.u, np.linspace(0, 2, 41))  # the bounding box's section
    u, v = np.meshgrid(s.u, s.v)
    missing = (u > 1 + 1e-9) & (v > 1 + 1e-9)
    assert np.isnan(s.values[missing]).all()
    inside = ~missing  # boundary samples (on faces and edges of the L) included
    assert np.isfinite(s.values[inside]).all()
    assert np.max(np.abs(s.values[inside] - field(u, v, 0.45)[inside])) < 1e-12
    # a vector field: the magnitude of the interpolated vector
    vector = nodal[:, None] * np.array([0.0, 3.0, 4.0])
    sv = tet_slice(L_POINTS, L_TETS, vector, (0, 0, 0.45), (0, 0, 1), resolution=41)
    np.testing.assert_allclose(sv.values[inside], 5 * np.abs(s.values[inside]), atol=1e-12)


def test_tet_slice_of_per_tet_values_and_an_oblique_plane():
    s = tet_slice(L_POINTS, L_TETS, L_CUBE.astype(float), (0, 0, 0.5), (0, 1, 0), resolution=21)
    assert (s.u_label, s.v_label) == ("x (m)", "z (m)")
    u = np.broadcast_to(s.u, s.values.shape)
    # at y = 0.5 the cut passes cubes 0 (x < 1) and 1 (x > 1)
    assert np.all(s.values[u < 1 - 1e-9] == 0) and np.all(s.values[u > 1 + 1e-9] == 1)
    # a field constant on the plane comes out as that constant wherever the plane is meshed
    n = np.array([1.0, 2.0, 2.0]) / 3
    origin = np.array([0.5, 0.6, 0.4])
    s = tet_slice(L_POINTS, L_TETS, L_POINTS @ n, origin, n, resolution=50)
    finite = np.isfinite(s.values)
    assert finite.sum() > 500
    assert np.max(np.abs(s.values[finite] - origin @ n)) < 1e-12
    assert (s.u_label, s.v_label) == ("u (m)", "v (m)")
    with pytest.raises(SliceError, match="misses the mesh"):
        tet_slice(L_POINTS, L_TETS, L_CUBE.astype(float), (0, 0, 1.5), (0, 0, 1))


def test_tet_slice_scales_with_samples_not_samples_times_tets():
    """10 x 10 x 10 cubes (6000 tets) at 200 x 200: well under a second, all samples inside."""
    cubes = list(itertools.product(range(10), repeat=3))
    points, tets, _ = kuhn_boxes(cubes)
    s = tet_slice(points, tets, field(*points.T), (5, 5, 5.5), (0, 0, 1))
    assert np.isfinite(s.values).all()
    u, v = np.meshgrid(s.u, s.v)
    assert np.max(np.abs(s.values - field(u, v, 5.5))) < 1e-11


def colorbar_column(image: np.ndarray, cmap_name: str) -> int | None:
    """A pixel column that runs through the colour map from its low end (bottom) to its high
    end (top), or None."""
    lut = matplotlib.colormaps[cmap_name](np.linspace(0, 1, 256))[:, :3]
    rgb = image[..., :3]
    for col in range(rgb.shape[1] - 1, -1, -1):
        distance = np.linalg.norm(rgb[:, col, None, :] - lut[None], axis=2)
        near = distance.min(axis=1) < 0.03
        if near.sum() < 0.5 * rgb.shape[0]:
            continue
        t = distance.argmin(axis=1)[near][::-1]  # bottom to top
        if t[0] <= 5 and t[-1] >= 250 and np.all(np.diff(t) >= -2):
            return col
    return None


def test_slice_png_has_the_size_a_colour_bar_and_grey_outside():
    u = np.linspace(0, 2, 60)
    values = np.broadcast_to(u, (40, 60)).copy()  # varies along u only: columns are uniform
    values[:, 45:] = np.nan
    s = Slice(u, np.linspace(0, 1, 40), values, "x (m)", "y (m)", "T at z = 0 m", "T", "K")
    for size in ((800, 600), (333, 222)):
        png = slice_png(s, size=size, cmap="viridis")
        image = imread(io.BytesIO(png))
        assert image.shape[:2] == (size[1], size[0])
    image = imread(io.BytesIO(slice_png(s)))
    col = colorbar_column(image, "viridis")
    assert col is not None and col > 0.75 * image.shape[1]  # right of the picture
    assert colorbar_column(imread(io.BytesIO(slice_png(s, cmap="plasma"))), "plasma") is not None
    grey = np.all(np.abs(image[..., :3] - NAN_COLOR[:3]) < 2 / 255, axis=2)
    assert grey.sum() > 0.05 * grey.size  # the NaN quarter of the picture
    assert slice_png(s) == slice_png(s)  # no date, no version: cacheable by input


def test_slice_data_is_a_float32_array_for_the_browser():
    s = tet_slice(L_POINTS, L_TETS, field(*L_POINTS.T), (0, 0, 0.5), (0, 0, 1), resolution=9)
    d = slice_data(s)
    nv, nu = d["shape"]
    back = np.frombuffer(d["values_f32"], dtype="<f4").reshape(nv, nu)
    np.testing.assert_array_equal(back, s.values.astype(np.float32))
    assert back[0, 0] == pytest.approx(field(0, 0, 0.5))  # row 0 is the lowest v
    assert back[0, nu - 1] == pytest.approx(field(2, 0, 0.5))
    assert np.isnan(back[nv - 1, nu - 1])  # the L's missing corner
    assert d["min"] == pytest.approx(field(0, 0, 0.5)) and d["max"] == pytest.approx(6.5)
    assert len(d["u"]) == nu and len(d["v"]) == nv and d["u_label"] == "x (m)"


def test_plots_have_their_size_and_the_same_bytes_twice():
    x = np.linspace(1, 10, 10)
    series = [Series("squares", x, x**2), Series("cubes", x, x**3)]
    for kind in ("line", "bar", "step"):
        png = plot(series, x_label="n", y_label="value", kind=kind, log_y=True, size=(640, 400))
        assert imread(io.BytesIO(png)).shape[:2] == (400, 640)
    assert plot(series, x_label="n", y_label="value", kind="step", log_y=True,
                size=(640, 400)) == png
    svg = plot(series, x_label="n", y_label="value", title="powers", format="svg")
    assert svg == plot(series, x_label="n", y_label="value", title="powers", format="svg")
    text = svg.decode()
    assert 'width="576pt" height="360pt"' in text  # 800 x 500 px at 100 dpi, in points
    assert "<dc:date>" not in text
    stairs = plot([Series("binned", np.arange(6.0), np.ones(5))], x_label="x", y_label="y",
                  kind="step")
    assert stairs[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="len"):
        plot([Series("bad", x, x[:5])], x_label="x", y_label="y")


def test_histogram_plot_and_plot_data():
    edges = np.linspace(0, 1, 11)
    counts = np.array([0, 0, 1, 3, 8, 20, 40, 60, 30, 5])
    png = histogram_plot(edges, counts, x_label="radius ratio", title="quality")
    assert imread(io.BytesIO(png)).shape[:2] == (500, 800)
    assert histogram_plot(edges, counts, x_label="radius ratio", title="quality") == png
    svg = histogram_plot(edges, counts, x_label="radius ratio", title="quality", format="svg")
    assert svg.startswith(b"<?xml")
    with pytest.raises(ValueError, match="11 increasing bin edges"):
        histogram_plot(edges[:-1], counts, x_label="r", title="t")
    data = plot_data([Series("a", np.array([1.0, 2.0]), np.array([3.0, np.nan]))], x_label="t")
    assert data["series"] == [{"label": "a", "x": [1.0, 2.0], "y": [3.0, None]}]
    assert data["x_label"] == "t"
