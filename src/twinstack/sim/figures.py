"""Pictures of results: planar slices of scalar fields, line/bar/step plots, histograms.

Rendering uses matplotlib's object-oriented API on the Agg canvas (`Figure` +
`FigureCanvasAgg`), never pyplot: no screen, no global figure registry, so calls from several
threads do not share state. Output bytes are reproducible (the service caches pictures by the
hash of their input): PNG without the "Software" text chunk, SVG without a date and with a
fixed `svg.hashsalt` for its element ids.

Slices come in two forms: `slice_png` (a finished picture with axes and a colour bar) and
`slice_data` (the sampled values for a browser that colours them itself).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# The only global matplotlib setting: a constant, so SVG element ids do not change per run.
matplotlib.rcParams["svg.hashsalt"] = "twinstack"

NAN_COLOR = (0.85, 0.85, 0.85, 1.0)  # outside the domain
AXES = "xyz"


class SliceError(ValueError):
    """The slice cannot be taken (position or plane outside the domain)."""


@dataclass
class Slice:
    """A scalar field sampled on a plane, ready to colour: values[j, i] is at (u[i], v[j])."""

    u: np.ndarray  # (nu,)
    v: np.ndarray  # (nv,)
    values: np.ndarray  # (nv, nu) float, NaN outside the domain
    u_label: str
    v_label: str
    title: str
    name: str = "field"
    unit: str = ""
    # cell boundaries (nu + 1,), (nv + 1,) when each value is a cell's (a Cartesian mesh's
    # cell-centred data): drawn as those cells; None: values at points, drawn around them
    u_edges: np.ndarray | None = None
    v_edges: np.ndarray | None = None

    @property
    def value_label(self) -> str:
        return f"{self.name} ({self.unit})" if self.unit else self.name


def _magnitude(values: np.ndarray, vector: bool) -> np.ndarray:
    return np.linalg.norm(values, axis=-1) if vector else values


def cartesian_slice(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    values: np.ndarray,
    axis: str,
    position: float,
    *,
    name: str = "field",
    unit: str = "",
    length_unit: str = "m",
) -> Slice:
    """The plane `axis` = `position` of a Cartesian mesh with cell boundaries x, y, z.

    Cell-centred values (nx, ny, nz) give the layer of cells that contains the position (on a
    face between two cells, the upper one), sampled at the in-plane cell centres, as a
    finite-volume solution means them. Nodal values (nx + 1, ny + 1, nz + 1) are interpolated
    linearly between the two node planes around the position, at the in-plane nodes. A
    trailing axis of 3 is a vector field and gives its magnitude (after interpolating). Two
    axes are one plane's nodal values already (what a solver's plane monitor records)."""
    if axis not in AXES:
        raise ValueError(f"axis must be one of 'x', 'y', 'z', got {axis!r}")
    a = AXES.index(axis)
    edges = [np.asarray(c, dtype=np.float64).reshape(-1) for c in (x, y, z)]
    for c, label in zip(edges, AXES, strict=True):
        if len(c) < 2 or np.any(np.diff(c) <= 0):
            raise ValueError(f"{label} must be increasing cell boundaries (at least 2)")
    cells = tuple(len(c) - 1 for c in edges)
    nodes = tuple(len(c) for c in edges)
    data = np.asarray(values, dtype=np.float64)
    vector = data.ndim == 4 and data.shape[3] == 3
    grid = data.shape[:3] if vector else data.shape
    lo, hi = edges[a][0], edges[a][-1]
    if not lo <= position <= hi:
        raise SliceError(f"{axis} = {position:g} is outside the domain: {axis} in [{lo:g}, {hi:g}]")
    in_plane = tuple(n for i, n in enumerate(nodes) if i != a)
    if grid == in_plane:
        plane = data
        coords = edges
        cell_edges: list[np.ndarray | None] = [None, None, None]
    elif grid == cells:
        k = int(np.clip(np.searchsorted(edges[a], position, side="right") - 1, 0, cells[a] - 1))
        plane = np.take(data, k, axis=a)
        coords = [(c[1:] + c[:-1]) / 2 for c in edges]
        cell_edges = list(edges)
    elif grid == nodes:
        c = edges[a]
        k = int(np.clip(np.searchsorted(c, position, side="right") - 1, 0, len(c) - 2))
        w = (position - c[k]) / (c[k + 1] - c[k])
        plane = (1 - w) * np.take(data, k, axis=a) + w * np.take(data, k + 1, axis=a)
        coords = edges
        cell_edges = [None, None, None]
    else:
        raise ValueError(
            f"values must be cell-centred {cells} or nodal {nodes} (with a trailing 3 for "
            f"vectors), or one plane's nodes {in_plane}, got {data.shape}"
        )
    plane = _magnitude(plane, vector)
    iu, iv = [i for i in range(3) if i != a]  # x-y, x-z or y-z: the first varies along rows
    return Slice(
        u=coords[iu],
        v=coords[iv],
        values=np.ascontiguousarray(plane.T),  # (nu, nv) -> (nv, nu)
        u_label=f"{AXES[iu]} ({length_unit})",
        v_label=f"{AXES[iv]} ({length_unit})",
        title=f"{name} at {axis} = {position:g} {length_unit}",
        name=name,
        unit=unit,
        u_edges=cell_edges[iu],
        v_edges=cell_edges[iv],
    )


def _plane_axes(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """In-plane unit axes (U, V) with U x V along the normal; the coordinate axes when the
    normal is one, else U is the coordinate axis least along the normal made orthogonal."""
    n = normal / np.linalg.norm(normal)
    for a in range(3):
        if abs(abs(n[a]) - 1.0) < 1e-12:
            iu, iv = [i for i in range(3) if i != a]
            u, v = np.eye(3)[iu], np.eye(3)[iv]
            return u, v, [AXES[iu], AXES[iv]]
    e = np.eye(3)[int(np.argmin(np.abs(n)))]
    u = e - (e @ n) * n
    u /= np.linalg.norm(u)
    return u, np.cross(n, u), ["u", "v"]


def _box_section(lo: np.ndarray, hi: np.ndarray, origin: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Points where the plane meets the edges of the box [lo, hi]."""
    corners = np.array([[(lo, hi)[(k >> a) & 1][a] for a in range(3)] for k in range(8)])
    pairs = np.array([(i, i | 1 << a) for i in range(8) for a in range(3) if not i >> a & 1])
    d = (corners - origin) @ n
    d0, d1 = d[pairs[:, 0]], d[pairs[:, 1]]
    crossing = (d0 * d1 <= 0) & (d0 != d1)
    t = d0[crossing] / (d0[crossing] - d1[crossing])
    p0, p1 = corners[pairs[crossing, 0]], corners[pairs[crossing, 1]]
    on_plane = corners[d == 0]
    return np.concatenate([p0 + t[:, None] * (p1 - p0), on_plane])


def tet_slice(
    points: np.ndarray,
    tets: np.ndarray,
    values: np.ndarray,
    origin: Sequence[float],
    normal: Sequence[float],
    *,
    resolution: int = 200,
    name: str = "field",
    unit: str = "",
    length_unit: str = "m",
) -> Slice:
    """A field on a tetrahedral mesh sampled on a `resolution` x `resolution` grid over the
    plane's section of the mesh's bounding box. Nodal values (one per point) are interpolated
    with barycentric coordinates, values per tet are constant; NaN outside the mesh.

    In-plane coordinates are u = p . U and v = p . V, with (U, V) the coordinate axes for an
    axis-aligned normal (so u, v are then x, y or z). Samples are located among the tets the
    plane cuts only, through the rectangle of grid samples each cut tet's bounding box covers:
    the work is the samples times how many boxes overlap, not samples x tets."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    t = np.asarray(tets, dtype=np.int64).reshape(-1, 4)
    data = np.asarray(values, dtype=np.float64)
    o = np.asarray(origin, dtype=np.float64).reshape(3)
    nrm = np.asarray(normal, dtype=np.float64).reshape(3)
    if not np.any(nrm):
        raise ValueError("the plane's normal must not be zero")
    if resolution < 2:
        raise ValueError(f"resolution must be at least 2, got {resolution}")
    if len(p) == len(t) and len(t):
        raise ValueError("as many points as tets: cannot tell nodal from per-tet values")
    if data.shape[0] not in (len(p), len(t)):
        raise ValueError(f"values must have {len(p)} (nodes) or {len(t)} (tets) rows")
    nodal = data.shape[0] == len(p)
    vector = data.ndim == 2 and data.shape[1] == 3
    nrm = nrm / np.linalg.norm(nrm)
    ax_u, ax_v, labels = _plane_axes(nrm)
    section = _box_section(p.min(axis=0), p.max(axis=0), o, nrm)
    d = ((p - o) @ nrm)[t]
    cut = np.nonzero((d.min(axis=1) <= 0) & (d.max(axis=1) >= 0))[0]
    if not len(section) or not len(cut):
        raise SliceError(
            f"the plane through {o.tolist()} with normal {nrm.tolist()} misses the mesh "
            f"(bounding box {p.min(axis=0).tolist()} to {p.max(axis=0).tolist()})"
        )
    su, sv = section @ ax_u, section @ ax_v
    u = np.linspace(su.min(), su.max(), resolution)
    v = np.linspace(sv.min(), sv.max(), resolution)
    offset = (o @ nrm) * nrm  # the plane's point at u = v = 0

    # candidate (tet, sample) pairs: the grid rectangle under each cut tet's projection
    corners = p[t[cut]]
    cu, cv = corners @ ax_u, corners @ ax_v
    du = (u[-1] - u[0]) / (resolution - 1) or 1.0
    dv = (v[-1] - v[0]) / (resolution - 1) or 1.0
    i0 = np.clip(np.ceil((cu.min(axis=1) - u[0]) / du - 1e-9), 0, resolution - 1).astype(np.int64)
    i1 = np.clip(np.floor((cu.max(axis=1) - u[0]) / du + 1e-9), -1, resolution - 1).astype(np.int64)
    j0 = np.clip(np.ceil((cv.min(axis=1) - v[0]) / dv - 1e-9), 0, resolution - 1).astype(np.int64)
    j1 = np.clip(np.floor((cv.max(axis=1) - v[0]) / dv + 1e-9), -1, resolution - 1).astype(np.int64)
    wide, tall = np.maximum(i1 - i0 + 1, 0), np.maximum(j1 - j0 + 1, 0)
    count = wide * tall
    which = np.repeat(np.arange(len(cut)), count)
    local = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    ii = i0[which] + local % wide[which]
    jj = j0[which] + local // wide[which]
    sample = offset + u[ii, None] * ax_u + v[jj, None] * ax_v

    # barycentric coordinates: lambda_1..3 = inverse(b - a, c - a, d - a) (x - a)
    a = corners[:, 0]
    edges = np.transpose(corners[:, 1:] - a[:, None], (0, 2, 1))  # columns b-a, c-a, d-a
    ok = np.abs(np.linalg.det(edges)) > 0
    inverse = np.zeros_like(edges)
    inverse[ok] = np.linalg.inv(edges[ok])
    lam = np.einsum("kij,kj->ki", inverse[which], sample - a[which])
    bary = np.column_stack([1 - lam.sum(axis=1), lam])
    worst = bary.min(axis=1)
    inside = (worst >= -1e-9) & ok[which]
    # one tet per sample: the one it is deepest inside (deterministic on shared faces)
    flat = (jj * resolution + ii)[inside]
    order = np.lexsort((-worst[inside], flat))
    first = np.unique(flat[order], return_index=True)[1]
    pick = np.nonzero(inside)[0][order[first]]

    out_shape = (resolution, resolution, 3) if vector else (resolution, resolution)
    out = np.full(out_shape, np.nan)
    tet = cut[which[pick]]
    picked = np.einsum("kn,kn...->k...", bary[pick], data[t[tet]]) if nodal else data[tet]
    out.reshape(resolution * resolution, *out_shape[2:])[flat[order[first]]] = picked
    where = f"{name} on the plane through ({', '.join(f'{c:g}' for c in o)})"
    if labels == ["u", "v"]:
        where += f" normal ({', '.join(f'{c:.3g}' for c in nrm)})"
    return Slice(
        u=u,
        v=v,
        values=_magnitude(out, vector),
        u_label=f"{labels[0]} ({length_unit})",
        v_label=f"{labels[1]} ({length_unit})",
        title=where,
        name=name,
        unit=unit,
    )


# --- pictures -----------------------------------------------------------------------------


def _figure(size: tuple[int, int], dpi: int) -> Figure:
    w, h = size
    if w < 50 or h < 50 or dpi <= 0:
        raise ValueError(f"size must be at least 50 x 50 pixels and dpi positive, got {size}")
    return Figure(figsize=(w / dpi, h / dpi), dpi=dpi, layout="constrained")


def _save(fig: Figure, fmt: str, dpi: int) -> bytes:
    if fmt not in ("png", "svg"):
        raise ValueError(f"format must be 'png' or 'svg', got {fmt!r}")
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # no date or library version in the file: same input, same bytes
    metadata: dict[str, Any] = {"Software": None} if fmt == "png" else {"Date": None}
    fig.savefig(buf, format=fmt, dpi=dpi, metadata=metadata)
    return buf.getvalue()


def slice_png(
    s: Slice,
    *,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    size: tuple[int, int] = (800, 600),
    dpi: int = 100,
) -> bytes:
    """PNG of exactly `size` pixels: the slice to scale, axes labelled with units, a colour bar
    labelled with the field's name and unit; outside the domain light grey."""
    fig = _figure(size, dpi)
    ax = fig.add_subplot()
    colormap = matplotlib.colormaps[cmap].with_extremes(bad=NAN_COLOR)
    values = np.ma.masked_invalid(s.values)
    finite = s.values[np.isfinite(s.values)]
    if vmin is None and vmax is None and not finite.size:
        vmin, vmax = 0.0, 1.0  # nothing to colour: an empty but valid scale
    if s.u_edges is not None and s.v_edges is not None:  # cells: draw them
        u, v, cells = s.u_edges, s.v_edges, True
    else:  # points: a cell around each
        u, v, cells = s.u, s.v, False
    shading: Literal["flat", "nearest"] = "flat" if cells else "nearest"
    mesh = ax.pcolormesh(u, v, values, cmap=colormap, vmin=vmin, vmax=vmax, shading=shading)
    ax.set_aspect("equal", adjustable="datalim")  # to scale; the axes keep their box
    ax.set_xlabel(s.u_label)
    ax.set_ylabel(s.v_label)
    ax.set_title(s.title)
    fig.colorbar(mesh, ax=ax, label=s.value_label)
    return _save(fig, "png", dpi)


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def slice_data(s: Slice) -> dict[str, Any]:
    """The slice for a browser that colours it itself:

    - "values_f32": bytes, little-endian float32, row-major (nv, nu) as in "shape": row j is
      v[j] from the bottom, column i is u[i]; NaN outside the domain. In JavaScript,
      `new Float32Array(buffer)` and value(i, j) = a[j * nu + i].
    - "u", "v": sample coordinates (lists); "u_edges", "v_edges": cell boundaries when the
      values are cells' (draw value (i, j) over [u_edges[i], u_edges[i + 1]] x ...), else None;
    - "min", "max": finite range (None if none);
    - "u_label", "v_label", "title", "name", "unit", "label" (name with unit).
    The service sends the bytes as a binary frame or base64; the rest is JSON."""
    values = np.ascontiguousarray(s.values, dtype="<f4")
    finite = values[np.isfinite(values)]
    return {
        "u": [float(c) for c in s.u],
        "v": [float(c) for c in s.v],
        "u_edges": None if s.u_edges is None else [float(c) for c in s.u_edges],
        "v_edges": None if s.v_edges is None else [float(c) for c in s.v_edges],
        "shape": [int(values.shape[0]), int(values.shape[1])],
        "values_f32": values.tobytes(),
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "u_label": s.u_label,
        "v_label": s.v_label,
        "title": s.title,
        "name": s.name,
        "unit": s.unit,
        "label": s.value_label,
    }


@dataclass
class Series:
    label: str
    x: np.ndarray
    y: np.ndarray


def _checked_series(series: Sequence[Series]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if not series:
        raise ValueError("a plot needs at least one series")
    out = []
    for s in series:
        x = np.asarray(s.x, dtype=np.float64).reshape(-1)
        y = np.asarray(s.y, dtype=np.float64).reshape(-1)
        if len(x) != len(y) and len(x) != len(y) + 1:
            raise ValueError(
                f"series {s.label!r}: x must have len(y) points, or len(y) + 1 bin edges "
                f"for a step plot; got {len(x)} and {len(y)}"
            )
        out.append((s.label, x, y))
    return out


def plot(
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    title: str = "",
    kind: Literal["line", "bar", "step"] = "line",
    log_y: bool = False,
    size: tuple[int, int] = (800, 500),
    format: Literal["png", "svg"] = "png",
) -> bytes:
    """A plot of one or more series (legend when any has a label). "step" holds y[i] from
    x[i] to x[i + 1] (x may be len(y) + 1 bin edges); "bar" puts the series' bars side by side."""
    data = _checked_series(series)
    if kind not in ("line", "bar", "step"):
        raise ValueError(f"kind must be 'line', 'bar' or 'step', got {kind!r}")
    dpi = 100
    fig = _figure(size, dpi)
    ax = fig.add_subplot()
    for k, (label, x, y) in enumerate(data):
        if kind == "step":
            if len(x) == len(y) + 1:
                ax.stairs(y, x, label=label)
            else:
                ax.step(x, y, where="post", label=label)
        elif len(x) != len(y):
            raise ValueError(f"series {label!r}: a {kind} plot needs as many x as y")
        elif kind == "line":
            ax.plot(x, y, label=label)
        else:
            gaps = np.diff(np.unique(x))
            width = 0.8 * (float(gaps.min()) if gaps.size else 1.0) / len(data)
            ax.bar(x + (k - (len(data) - 1) / 2) * width, y, width=width, label=label)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if any(label for label, _, _ in data):
        ax.legend()
    return _save(fig, format, dpi)


def histogram_plot(
    edges: np.ndarray,
    counts: np.ndarray,
    *,
    x_label: str,
    title: str,
    format: Literal["png", "svg"] = "png",
    size: tuple[int, int] = (800, 500),
) -> bytes:
    """Counts over bins (len(edges) = len(counts) + 1), e.g. a mesh's radius-ratio quality."""
    e = np.asarray(edges, dtype=np.float64).reshape(-1)
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    if len(e) != len(c) + 1 or np.any(np.diff(e) <= 0):
        raise ValueError(f"edges must be {len(c) + 1} increasing bin edges, got {len(e)}")
    dpi = 100
    fig = _figure(size, dpi)
    ax = fig.add_subplot()
    ax.stairs(c, e, fill=True, alpha=0.8)
    ax.stairs(c, e, color="black", linewidth=0.8)
    ax.set_xlabel(x_label)
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, format, dpi)


def plot_data(
    series: Sequence[Series],
    *,
    x_label: str = "",
    y_label: str = "",
    title: str = "",
    kind: str = "line",
    log_y: bool = False,
) -> dict[str, Any]:
    """The plot as JSON-able data for a browser chart; non-finite numbers become None."""
    return {
        "series": [
            {
                "label": label,
                "x": [_finite_or_none(float(a)) for a in x],
                "y": [_finite_or_none(float(b)) for b in y],
            }
            for label, x, y in _checked_series(series)
        ],
        "x_label": x_label,
        "y_label": y_label,
        "title": title,
        "kind": kind,
        "log_y": log_y,
    }
