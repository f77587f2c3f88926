"""The kriging compute service: ordinary kriging of scattered 2-D data (numerics in sim/).

Every call is sized before anything is allocated: its peak memory (the service's own resident
size, the parsed request, the numerics and the JSON reply) against `compute_memory_mb`, its
floating-point work against `compute_work_gflop`, and its reply against `max_message_bytes`.
A call over any of them is refused with 422 `too_large`, naming the limit and how to get under
it. Calls run one at a time, so each may use the whole budget.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import functools
import logging
import math
import resource
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, Field, PositiveInt, model_validator

from twinstack.exitcodes import ExitCode, FatalError
from twinstack.wire.actions import Call, action
from twinstack.wire.errors import ActionError
from twinstack.wire.runtime import NoParams, Ports, ServiceBase

log = logging.getLogger(__name__)

CALLERS = ("lss", "relay", "admin")  # its own LSS and the session's relay (same session enforced)
MIB = 2**20
# Each target solves its own dense (k+1)^2 system, O(k^3): 256 neighbours are 11 MFLOP and
# 0.5 MB per target. Kriging weights fall off fast with distance (screening), so a few dozen
# neighbours carry nearly all the weight; past a few hundred, global kriging is the tool.
MAX_NEIGHBOURS = 256
# Local kriging's numba kernel (sim/kriging_local.py), loaded at the first local call and kept:
# numba, llvmlite and the cached kernel, measured 105 MB resident.
NUMBA_BYTES = 112 * 2**20
SMALL_CALL_FLOP = 1e8  # planned work below which a call runs on one BLAS thread (~2 ms)
SUGGESTED_NEIGHBOURS = 50
# A reply number: the longest repr of a float (-2.2250738585072014e-308, 24 characters) and
# the ", " after it; each grid row adds its brackets and separator to both arrays.
JSON_NUMBER_BYTES = 26
JSON_ROW_BYTES = 4
JSON_REPLY_EXTRA = 1024  # the envelope, keys, shape and variogram
# A point with its value (or a listed target) once parsed: the JSON decoder's lists and floats
# and pydantic's tuples (measured: 320 bytes for floats, 314 for integers).
REQUEST_ITEM_BYTES = 400
# A reply target: two Python floats in the result lists (measured: 64 bytes).
REPLY_ITEM_BYTES = 64

Pair = tuple[float, float]
T = TypeVar("T")
# Set by _compute in the context the compute thread runs in: whether the call was cancelled.
STOP_REQUESTED: contextvars.ContextVar[Callable[[], bool]] = contextvars.ContextVar(
    "stop_requested")


class Axis(BaseModel):
    """[start, stop, n]: n evenly spaced coordinates from start to stop inclusive."""

    start: float
    stop: float
    n: PositiveInt

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            if len(value) != 3:
                raise ValueError("an axis is [start, stop, n]")
            return {"start": value[0], "stop": value[1], "n": value[2]}
        return value


class Grid(BaseModel):
    x: Axis
    y: Axis


class VariogramSpec(BaseModel):
    """A model and either all of its parameters (fixed) or none of them (fitted to the data)."""

    model_config = {"extra": "forbid"}

    model: Literal["spherical", "exponential", "gaussian", "linear", "power"] = "spherical"
    psill: float | None = Field(None, ge=0)
    range: float | None = Field(None, gt=0)
    nugget: float | None = Field(None, ge=0)
    slope: float | None = Field(None, ge=0)
    scale: float | None = Field(None, ge=0)
    exponent: float | None = Field(None, gt=0, lt=2)

    def given(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump(exclude={"model"}).items() if v is not None}


class InterpolateParams(BaseModel):
    model_config = {"extra": "forbid"}

    points: list[Pair] = Field(min_length=3)
    values: list[float]
    grid: Grid | None = None
    targets: list[Pair] | None = Field(None, min_length=1)
    variogram: VariogramSpec = VariogramSpec()
    neighbours: int | None = Field(None, ge=3, description="use only the k nearest points")

    @model_validator(mode="after")
    def _consistent(self) -> InterpolateParams:
        if len(self.values) != len(self.points):
            raise ValueError(f"{len(self.points)} points but {len(self.values)} values")
        if (self.grid is None) == (self.targets is None):
            raise ValueError("give exactly one of grid or targets")
        return self


@dataclass(frozen=True)
class Size:
    """What sizes a call: counts only, so it is known before any array exists."""

    points: int
    targets: int
    rows: int  # a grid's rows (nested JSON arrays in the reply); 0 for a target list
    listed: int  # targets given one by one in the request (parsed objects)
    neighbours: int | None
    fit: bool

    @classmethod
    def of(cls, params: InterpolateParams) -> Size:
        grid, listed = params.grid, len(params.targets or ())
        return cls(points=len(params.points),
                   targets=grid.x.n * grid.y.n if grid is not None else listed,
                   rows=grid.y.n if grid is not None else 0, listed=listed,
                   neighbours=params.neighbours, fit=not params.variogram.given())

    def fewer_targets(self, count: int) -> Size:
        return replace(self, targets=count, rows=min(self.rows, count),
                       listed=min(self.listed, count))

    @property
    def local(self) -> bool:
        return self.neighbours is not None and self.neighbours < self.points

    def describe(self) -> str:
        how = (f"kriging {self.points:,} points with {self.neighbours} neighbours" if self.local
               else f"global kriging of {self.points:,} points")
        return f"{how} at {self.targets:,} target{'s' if self.targets != 1 else ''}"


@dataclass(frozen=True)
class Estimate:
    memory_bytes: int  # the process's peak: its idle size included
    flop: float
    reply_bytes: int


@dataclass(frozen=True)
class Budget:
    """What one call may use: the settings, and what the idle service already holds."""

    memory_mb: int
    work_gflop: float
    message_bytes: int
    process_bytes: int
    kernel_loaded: bool = False  # local kriging's numba kernel: counted in process_bytes

    def estimate(self, size: Size) -> Estimate:
        from twinstack.sim.kriging import kriging_cost, uses_neighbours

        numerics = kriging_cost(size.points, size.targets, neighbours=size.neighbours,
                                fit=size.fit)
        reply = 2 * (size.targets * JSON_NUMBER_BYTES + size.rows * JSON_ROW_BYTES + 2) \
            + JSON_REPLY_EXTRA
        # The request body stays read while the call runs. The reply's result lists become
        # a JSON string, joined from parts, encoded, encrypted and buffered for the socket:
        # up to five copies at once. The allocator keeps pieces of earlier calls, counted as
        # one more message.
        request = self.message_bytes + REQUEST_ITEM_BYTES * (size.points + size.listed)
        replying = REPLY_ITEM_BYTES * size.targets + 5 * reply + 8 * MIB
        kept = self.message_bytes
        memory = self.process_bytes + kept + request + max(numerics.bytes, replying)
        if uses_neighbours(size.points, size.neighbours) and not self.kernel_loaded:
            memory += NUMBA_BYTES  # it loads the kernel, which stays (then in process_bytes)
        return Estimate(memory, numerics.flop, reply)

    def fits(self, size: Size) -> bool:
        found = self.estimate(size)
        return (found.memory_bytes <= self.memory_mb * MIB
                and found.flop <= self.work_gflop * 1e9
                and found.reply_bytes <= self.message_bytes)

    def check(self, size: Size, target_field: str) -> Estimate:
        """The call's estimate, or ActionError 422 `too_large` naming the limit it passes."""
        if size.neighbours is not None and size.neighbours > MAX_NEIGHBOURS:
            raise ActionError(
                422, "too_large", f"neighbours may be at most {MAX_NEIGHBOURS} (got "
                f"{size.neighbours:,}): each target solves its own dense (k+1) x (k+1) system, "
                "O(k^3) work, and the nearest few dozen points carry nearly all the weight; "
                f"give e.g. {SUGGESTED_NEIGHBOURS}, or leave neighbours out for global kriging",
                "params.neighbours")
        found = self.estimate(size)
        if found.reply_bytes > self.message_bytes:
            raise ActionError(422, "too_large", self._reply_message(size, found),
                              target_field)
        if found.memory_bytes > self.memory_mb * MIB:
            raise self._over(size, target_field, (
                f"{size.describe()} needs ~{_mb(found.memory_bytes)} of memory, over the "
                f"{self.memory_mb:,} MB budget (compute_memory_mb; the idle service holds "
                f"~{_mb(self.process_bytes)} of it)"), lambda e: e.memory_bytes)
        if found.flop > self.work_gflop * 1e9:
            raise self._over(size, target_field, (
                f"{size.describe()} needs ~{found.flop / 1e9:,.0f} GFLOP, over the "
                f"{self.work_gflop:,g} GFLOP budget (compute_work_gflop)"), lambda e: e.flop)
        return found

    def _reply_message(self, size: Size, found: Estimate) -> str:
        most = self.most_targets(size)
        what = (f"a {size.targets // size.rows:,} x {size.rows:,} grid is {size.targets:,} "
                "targets" if size.rows else f"{size.targets:,} targets")
        example = ""
        if size.rows:
            nx, ny = self.largest_grid(size)
            example = f" (e.g. a {nx:,} x {ny:,} grid)"
        return (f"{what}: their estimates and variances would be up to "
                f"~{_mb(found.reply_bytes)} of JSON, over the {_mb(self.message_bytes)} reply "
                f"limit (max_message_bytes); ask for at most {most:,} targets{example}")

    def _over(self, size: Size, target_field: str, what: str,
              measure: Callable[[Estimate], float]) -> ActionError:
        """The refusal, naming the count to change and the largest values that pass.

        The field is the targets when they account for more of the excess `measure` (memory
        or work) than the points do, else the points. Suggestions stay in the call's own mode
        (global or k-nearest), where every cost grows with every count.
        """
        def fits(**changes: Any) -> bool:
            return self.fits(replace(size, **changes))

        options = []
        if size.local:
            k = largest(lambda k: fits(neighbours=k), 3, (size.neighbours or 3) - 1)
            if k >= 3:
                options.append(f"give at most {k} neighbours")
            lowest = (size.neighbours or 0) + 1
        else:
            k = min(SUGGESTED_NEIGHBOURS, size.points - 1)
            if k >= 3 and fits(neighbours=k):
                options.append(f"give neighbours (e.g. {k})")
            lowest = 3
        points = largest(lambda n: fits(points=n), lowest, size.points - 1)
        if points >= lowest:
            options.append(f"give at most {points:,} points")
        targets = largest(lambda m: self.fits(size.fewer_targets(m)), 1, size.targets - 1)
        if targets >= 1:
            options.append(f"ask for at most {targets:,} targets")
        one_target = size.fewer_targets(1)
        by_targets = measure(self.estimate(size)) - measure(self.estimate(one_target))
        by_points = (measure(self.estimate(one_target))
                     - measure(self.estimate(replace(one_target, points=3))))
        field = target_field if by_targets > by_points else "params.points"
        advice = (", ".join(options[:-1]) + " or " + options[-1] if len(options) > 1
                  else options[0] if options else "split the data or the targets")
        return ActionError(422, "too_large", f"{what}; {advice}", field)

    def most_targets(self, size: Size) -> int:
        """The most targets whose reply fits max_message_bytes (a flat list of them)."""
        return largest(lambda m: self.estimate(replace(size, targets=m, rows=0)).reply_bytes
                        <= self.message_bytes, 1, max(size.targets, 1))

    def largest_grid(self, size: Size) -> tuple[int, int]:
        """The grid's shape scaled down, both axes alike, until its reply fits."""
        nx, ny = size.targets // size.rows, size.rows
        scale = largest(lambda s: self._grid_reply_fits(size, nx * s // 1000, ny * s // 1000),
                         1, 1000)
        return max(1, nx * scale // 1000), max(1, ny * scale // 1000)

    def _grid_reply_fits(self, size: Size, nx: int, ny: int) -> bool:
        nx, ny = max(nx, 1), max(ny, 1)
        grid = replace(size, targets=nx * ny, rows=ny)
        return self.estimate(grid).reply_bytes <= self.message_bytes

    def caps(self) -> dict[str, int]:
        """Headline limits for a fitted variogram at one target (what `limits` reports)."""
        one = Size(points=3, targets=1, rows=0, listed=0, neighbours=None, fit=True)
        top = 1 << 40
        return {
            "max_neighbours": MAX_NEIGHBOURS,
            "max_targets": self.most_targets(replace(one, targets=top)),
            "max_global_points": largest(lambda n: self.fits(replace(one, points=n)), 3, top),
            "max_points_with_neighbours": largest(
                lambda n: self.fits(replace(one, points=n, neighbours=SUGGESTED_NEIGHBOURS)), 3,
                top),
        }


def largest(fits: Callable[[int], bool], low: int, high: int) -> int:
    """The largest value in [low, high] that fits (fits is monotone), or low - 1 if none."""
    if not fits(low):
        return low - 1
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def _mb(count: int) -> str:
    return f"{count / 2**30:,.1f} GB" if count >= 2**30 else f"{math.ceil(count / MIB):,} MB"


def blas_threads(planned: Estimate) -> int | None:
    """BLAS threads for a call: one for a small call, where more spin for nothing (a
    200-point call: 2.7 ms of CPU with one thread, 4.1 ms with two, the same wall time), so
    many small callers do not burn every core; else as many as BLAS has (None)."""
    return 1 if planned.flop < SMALL_CALL_FLOP else None


def _interpolate(params: InterpolateParams, threads: int | None = None) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):
        return _kriged(params)


def _kriged(params: InterpolateParams) -> dict[str, Any]:
    import numpy as np

    from twinstack.sim import kriging

    _release_freed_memory()
    spec = params.variogram
    names = kriging.PARAMETERS[spec.model]
    given = spec.given()
    if set(given) - set(names):
        raise ActionError(422, "invalid_params",
                          f"{spec.model} takes {', '.join(names)}; not "
                          f"{', '.join(sorted(set(given) - set(names)))}", "params.variogram")
    if given and set(given) != set(names):
        raise ActionError(422, "invalid_params",
                          f"give all of {', '.join(names)} or none (to fit them); missing "
                          f"{', '.join(n for n in names if n not in given)}", "params.variogram")
    points, values = np.asarray(params.points), np.asarray(params.values)
    try:
        variogram = (kriging.Variogram(spec.model, tuple(given[n] for n in names)) if given
                     else kriging.fit_variogram(points, values, spec.model))
        if params.grid is not None:
            g = params.grid
            targets, shape = kriging.grid_targets((g.x.start, g.x.stop, g.x.n),
                                                  (g.y.start, g.y.stop, g.y.n))
        else:
            targets, shape = np.asarray(params.targets), None
        result = kriging.ordinary_kriging(points, values, targets, variogram,
                                          neighbours=params.neighbours,
                                          stop=STOP_REQUESTED.get(lambda: False))
    except kriging.Stopped as exc:
        log.info("interpolate %s: its caller is gone", exc)
        raise
    except ValueError as exc:
        raise ActionError(422, "invalid_params", str(exc), "params") from exc
    del points, values, targets
    estimates, variances = result.estimates, result.variances
    if shape is not None:
        estimates, variances = estimates.reshape(shape), variances.reshape(shape)
    return {"estimates": estimates.tolist(), "variances": variances.tolist(),
            "shape": list(shape) if shape else [len(estimates)], "variogram": variogram.as_dict()}


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _tune_allocator() -> None:
    """Serve blocks of 4 MiB and more (large arrays, reply strings) from their own mappings.

    glibc raises its mmap threshold after a large block is freed, up to 32 MiB; later large
    blocks then come from the heap, which keeps them: the peak of each 16 MB reply measured
    15 MB above the one before. A fixed threshold hands them back on free (and fixes the
    trim threshold too). The 2 MiB work chunks stay on the heap: mapping each anew took
    1.7x the CPU time. Elsewhere (musl, macOS) there is nothing to tune.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, 4 * MIB)


def _release_freed_memory() -> None:
    """Hand heap pages that earlier calls freed back to the system (glibc keeps them)."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


@functools.cache  # once a process: a pooled worker did it before its session claimed it
def _warm_up() -> int:
    """Import and run the numerics once (BLAS, LAPACK, k-d tree, fit); the peak RSS after.
    A small call, so on one BLAS thread (blas_threads): BLAS's other threads spin after a
    call, and 30 services starting at once on 2 cores spent 0.6 s of CPU each, 0.13 with one
    thread (measured: 30 sessions opened at once, p95 10.5 s -> 3.1 s)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from twinstack.sim import kriging

    _tune_allocator()
    rng = np.random.default_rng(0)
    points, values = rng.uniform(0, 1, (300, 2)), rng.uniform(0, 1, 300)
    with threadpool_limits(1):
        variogram = kriging.fit_variogram(points, values, "spherical")
        kriging.ordinary_kriging(points, values, points[:50] + 0.001, variogram)  # not local:
    return _peak_rss()  # numba would add ~0.4 s and 105 MB to every start (see NUMBA_BYTES)


def _peak_rss() -> int:
    """This process's peak resident size. Not getrusage's ru_maxrss: on Linux that keeps the
    peak of the process before exec, i.e. of whatever forked it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class KrigingService(ServiceBase):
    name: ClassVar[str] = "kriging"
    ports: ClassVar[Ports] = Ports(internal=7450, health=7451)
    budget: Budget

    @staticmethod
    def warm_up() -> int:
        return _warm_up()

    async def start(self) -> None:
        """Fail at start, not at the first call, where the numerics are not installed or
        the memory budget is below what the service itself takes."""
        # One compute thread: calls queue behind each other, so each may use the whole budget,
        # and the numeric libraries' per-thread buffers exist once, made by the warm-up.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kriging")
        try:
            process = await self._compute(_warm_up)
        except ImportError as exc:
            raise FatalError(ExitCode.CONFIG_ERROR, f"kriging needs numpy and scipy "
                             f"(pip install 'twinstack[compute]'): {exc}") from exc
        s = self.settings
        self.budget = Budget(s.compute_memory_mb, s.compute_work_gflop, s.max_message_bytes,
                             process)
        smallest = Size(points=3, targets=1, rows=0, listed=1, neighbours=None, fit=True)
        if not self.budget.fits(smallest):
            need = self.budget.estimate(smallest).memory_bytes
            raise FatalError(ExitCode.CONFIG_ERROR, (
                f"compute_memory_mb ({s.compute_memory_mb} MB) leaves no room for a call: the "
                f"idle service holds ~{_mb(process)} and the smallest call needs ~{_mb(need)} "
                f"(with max_message_bytes {s.max_message_bytes:,})"))
        log.info("kriging budget", extra={"process_mb": round(process / MIB),
                                          **self.budget.caps()})

    async def stop(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)

    async def _compute(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the compute thread; if the call is cancelled meanwhile (its caller timed
        out or asked to cancel), the numerics stop at their next block of targets."""
        stop = threading.Event()
        context = contextvars.copy_context()  # the request id, for records logged inside
        context.run(STOP_REQUESTED.set, stop.is_set)
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._worker, functools.partial(context.run, fn, *args))
        except asyncio.CancelledError:
            stop.set()
            raise

    @action(allow=CALLERS)
    async def interpolate(self, call: Call, params: InterpolateParams) -> dict[str, Any]:
        """Estimates and kriging variances on a grid (ny x nx) or at target points."""
        from twinstack.sim.kriging import uses_neighbours

        size = Size.of(params)
        planned = self.budget.check(size, "params.grid" if params.grid else "params.targets")
        if not self.budget.kernel_loaded and uses_neighbours(size.points, size.neighbours):
            # from this call on the kernel is resident: every later call is sized with it
            self.budget = replace(self.budget, kernel_loaded=True,
                                  process_bytes=self.budget.process_bytes + NUMBA_BYTES)
        started = time.perf_counter()
        result = await self._compute(_interpolate, params, blas_threads(planned))
        log.info("kriged %d points onto %s targets in %.3f s", size.points,
                 "x".join(map(str, result["shape"])), time.perf_counter() - started,
                 extra={"variogram": result["variogram"],
                        "planned_mb": round(planned.memory_bytes / MIB),
                        "planned_gflop": round(planned.flop / 1e9, 3)})
        return result

    @action(allow=CALLERS)
    async def limits(self, call: Call, params: NoParams) -> dict[str, Any]:
        """The budget calls are sized against, and the largest calls of each kind it allows."""
        return {"budget": asdict(self.budget), **self.budget.caps()}
