"""The scanline voxelizer against exact polyhedral volumes, closed forms and counted edges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh

from twinstack.sim.meshbool import Mesh, mesh_boolean
from twinstack.sim.voxel import Body, Grid, GridError, Voxels, axis_lines, voxelize

PI = math.pi
LENS = 5 * PI / 12  # two unit spheres, centres 1 apart


def sphere(center: tuple[float, float, float], material: int = 1, subdivisions: int = 5,
           **kw: object) -> Body:
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0)
    return Body(s.vertices + np.asarray(center), s.faces, material, **kw)  # type: ignore[arg-type]


def box(lo: tuple[float, float, float], hi: tuple[float, float, float], material: int = 1,
        **kw: object) -> Body:
    b = trimesh.creation.box(bounds=np.array([lo, hi], dtype=float))
    return Body(b.vertices, b.faces, material, **kw)  # type: ignore[arg-type]


def polyhedron_volume(body: Body) -> float:
    return float(trimesh.Trimesh(body.vertices, body.faces, process=False).volume)


def test_sphere_volume_at_200_cubed():
    ball = sphere((0, 0, 0))
    exact = polyhedron_volume(ball)  # 20,480 triangles: 5.4e-4 under 4/3 pi
    vox = voxelize(Grid.uniform((-1.05,) * 3, (1.05,) * 3, 200), [ball])
    assert vox.volume() == pytest.approx(exact, rel=1e-4)
    assert vox.volume() == pytest.approx(4 / 3 * PI, rel=1e-3)
    assert vox.fill.dtype == np.float32 and vox.material.dtype == np.uint16
    assert vox.fill.min() == 0 and vox.fill.max() == 1
    partial = (vox.fill > 0) & (vox.fill < 1)
    assert 0 < partial.sum() < 0.05 * vox.grid.cells  # a shell of boundary cells
    # the staircase (cells at least half inside) is close to the volume too, not exact
    assert vox.material_volumes()[1] == pytest.approx(exact, rel=1e-2)
    assert not any(e.any() for e in vox.pec_edges)


def test_two_sphere_union_at_200_cubed():
    a, b = sphere((0, 0, 0), 1), sphere((1, 0, 0), 2)
    union = mesh_boolean("union", Mesh.from_arrays(a.vertices, a.faces),
                         Mesh.from_arrays(b.vertices, b.faces))
    grid = Grid(np.linspace(-1, 2, 201), np.linspace(-1, 1, 201), np.linspace(-1, 1, 201))
    vox = voxelize(grid, [a, b])
    assert vox.volume() == pytest.approx(union.volume, rel=1e-4)
    assert vox.volume() == pytest.approx(8 / 3 * PI - LENS, rel=2e-3)  # the tessellation's
    one = voxelize(grid, [Body(union.vertices, union.faces, 3)])  # the union as one mesh
    assert one.volume() == pytest.approx(union.volume, rel=1e-4)
    # equal priorities: the later sphere wins the lens
    mat = vox.material_volumes()
    assert mat[2] == pytest.approx(4 / 3 * PI, rel=1e-2)
    assert mat[1] == pytest.approx(4 / 3 * PI - LENS, rel=1e-2)


def test_overlap_rule_priority_then_order():
    grid = Grid.uniform((0, 0, 0), (4, 2, 2), (8, 4, 4))  # cells of 0.5
    first = box((0, 0, 0), (2, 2, 2), material=1, priority=1)
    second = box((1, 0, 0), (3.25, 2, 2), material=2)
    vox = voxelize(grid, [first, second])
    # x cells [0, .5, 1) only first; [1, 2) both: priority 1 wins; [2, 3) second;
    # [3, 3.5) half covered by second: at least half, so second; [3.5, 4) nothing
    assert vox.material[:, 0, 0].tolist() == [1, 1, 1, 1, 2, 2, 2, 0]
    equal = voxelize(grid, [box((0, 0, 0), (2, 2, 2), 1), box((1, 0, 0), (3.25, 2, 2), 2)])
    assert equal.material[:, 0, 0].tolist() == [1, 1, 2, 2, 2, 2, 2, 0]
    swapped = voxelize(grid, [box((1, 0, 0), (3.25, 2, 2), 2), box((0, 0, 0), (2, 2, 2), 1)])
    assert swapped.material[:, 0, 0].tolist() == [1, 1, 1, 1, 2, 2, 2, 0]
    assert vox.fill[:, 0, 0].tolist() == [1, 1, 1, 1, 1, 1, 0.5, 0]  # the union's fill
    assert vox.volume() == pytest.approx(3.25 * 4)
    below_half = voxelize(grid, [box((0, 0, 0), (0.2, 2, 2), 5)])
    assert below_half.material.max() == 0 and below_half.volume() == pytest.approx(0.8)


def test_rays_through_edges_and_vertices_count_once():
    # rays at y, z in {-1, 0, 1}: along the cube's edges, through its vertices and through
    # the diagonals of its x-faces; the perturbation (y + e, z + e^2) puts y = z = -1 inside
    cube = box((-1, -1, -1), (1, 1, 1))
    lines = np.array([-1.5, -0.5, 0.5, 1.5])
    vox = voxelize(Grid(np.array([-2.0, -1, 1, 2]), lines, lines), [cube], samples=1)
    assert vox.fill[1].tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 0]]
    assert vox.fill[[0, 2]].max() == 0


def test_graded_axis_lines():
    snaps = [2.0, 7.3, 7.35]
    x = axis_lines(0, 10, 1.0, refinements=[(4, 5, 0.1)], snap=snaps, max_ratio=1.5)
    d = np.diff(x)
    assert x[0] == 0 and x[-1] == 10 and np.all(d > 0)
    assert all(p in x for p in snaps)
    assert d.max() <= 1.0 * (1 + 1e-9)
    assert d[(x[1:] > 4) & (x[:-1] < 5)].max() <= 0.1 * (1 + 1e-9)
    assert np.maximum(d[1:] / d[:-1], d[:-1] / d[1:]).max() <= 1.5
    assert len(x) < 120  # graded, not 0.1 everywhere (101 lines would be uniform at 0.1)
    np.testing.assert_allclose(axis_lines(0, 1, 0.1), np.linspace(0, 1, 11), rtol=0, atol=1e-12)


def test_box_on_snapped_lines_and_sphere_on_a_graded_grid():
    lo, hi = (-0.7, -0.45, -0.3), (0.6, 0.35, 0.55)
    axes = [axis_lines(-1.2, 1.2, 0.1, refinements=[(-0.2, 0.2, 0.02)], snap=[lo[a], hi[a]])
            for a in range(3)]
    grid = Grid(*axes)
    vox = voxelize(grid, [box(lo, hi)])
    assert set(np.unique(vox.fill).tolist()) == {0.0, 1.0}  # no partial cells
    assert vox.volume() == pytest.approx(np.prod(np.subtract(hi, lo)), rel=1e-12)
    ball = sphere((0.1, 0, 0), subdivisions=4)
    assert voxelize(grid, [ball]).volume() == pytest.approx(polyhedron_volume(ball), rel=1e-3)


def edge_count(vox: Voxels) -> list[int]:
    return [int(e.sum()) for e in vox.pec_edges]


def test_pec_edges():
    grid = Grid.uniform((0, 0, 0), (2, 2, 2), 8)  # nodes every 0.25
    # faces on grid planes: nodes 0.25..1.75 (7 per axis), 6 edges along each of 7 x 7 lines
    on_lines = voxelize(grid, [box((0.25,) * 3, (1.75,) * 3, pec=True)])
    assert edge_count(on_lines) == [6 * 7 * 7] * 3
    assert on_lines.pec_edges[0].shape == (8, 9, 9)
    assert on_lines.pec_edges[1].shape == (9, 8, 9)
    assert on_lines.pec_edges[2].shape == (9, 9, 8)
    # faces at 0.3 and 1.7: nodes 0.5..1.5 (5 per axis); the end edges are 0.2/0.25 inside
    assert edge_count(voxelize(grid, [box((0.3,) * 3, (1.7,) * 3, pec=True)])) == [150] * 3
    # faces at 0.4 and 1.6: the end edges are 0.1/0.25 inside, not more than half
    assert edge_count(voxelize(grid, [box((0.4,) * 3, (1.6,) * 3, pec=True)])) == [100] * 3
    dielectric = voxelize(grid, [box((0.3,) * 3, (1.7,) * 3)])
    assert edge_count(dielectric) == [0, 0, 0]
    # the edges of the x-line y = z = 1 inside a PEC sphere of radius 0.7 at (1, 1, 1)
    ball = sphere((1, 1, 1), pec=True)
    ball = Body(0.7 * (ball.vertices - 1) + 1, ball.faces, 1, pec=True)
    marked = voxelize(grid, [ball]).pec_edges[0][:, 4, 4]
    assert marked.tolist() == [False, True, True, True, True, True, True, False]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: axis_lines(0, 1, 0), "the cell size must be positive"),
        (lambda: axis_lines(0, 1, math.nan), "finite"),
        (lambda: axis_lines(1, 1, 0.1), "the axis is empty"),
        (lambda: axis_lines(0, 1, 1e-6), "the axis would need"),
        (lambda: Grid(np.array([0.0, 1, 1]), np.arange(2.0), np.arange(2.0)),
         "the grid's x lines are not strictly increasing"),
        (lambda: voxelize(Grid.uniform((0, 0, 0), (1, 1, 1), 2), []), "the body list is empty"),
        (lambda: voxelize(Grid.uniform((0, 0, 0), (1, 1, 1), 1000), [box((0,) * 3, (1,) * 3)]),
         "the grid has 1,000,000,000 cells, more than the limit 200,000,000"),
        (lambda: voxelize(Grid.uniform((0, 0, 0), (1, 1, 1), 2), [box((0,) * 3, (1,) * 3, 0)]),
         "material must be in 1..65535"),
    ],
)
def test_errors(call, message: str):
    with pytest.raises(GridError) as err:
        call()
    assert message in str(err.value)


def test_too_many_cells_says_the_memory():
    with pytest.raises(GridError, match=r"would need about \d+\.\d GiB"):
        voxelize(Grid.uniform((0, 0, 0), (1, 1, 1), 1000), [box((0,) * 3, (1,) * 3)])


def test_whole_cells_between_snaps_stay_uniform():
    """A box whose sides are whole cells keeps a uniform grid; a gap that is not whole grades."""
    np.testing.assert_allclose(axis_lines(0, 1, 0.25, snap=[0, 1]), np.linspace(0, 1, 5),
                               rtol=0, atol=1e-12)
    padded = axis_lines(-0.2, 2.2, 0.05, snap=[0, 2, 0.6, 1.4])
    np.testing.assert_allclose(padded, np.linspace(-0.2, 2.2, 49), rtol=0, atol=1e-12)
    assert len(axis_lines(0, 1, 0.1, snap=[0.5, 0.5 + 1e-14])) == 11  # near-equal snaps merge
    graded = np.diff(axis_lines(0, 1, 0.25, snap=[0.3]))
    assert 0.3 in axis_lines(0, 1, 0.25, snap=[0.3]) and graded.max() <= 0.25 * (1 + 1e-9)
    assert np.maximum(graded[1:] / graded[:-1], graded[:-1] / graded[1:]).max() <= 1.5
