"""The kriging compute service: ordinary kriging of scattered 2-D data (numerics in sim/)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, PositiveInt, model_validator

from twinstack.exitcodes import ExitCode, FatalError
from twinstack.wire.actions import Call, action
from twinstack.wire.errors import ActionError
from twinstack.wire.runtime import Ports, ServiceBase

log = logging.getLogger(__name__)

MAX_POINTS = 200_000
MAX_TARGETS = 4_000_000
CALLERS = ("lss", "relay", "admin")  # its own LSS and the session's relay (same session enforced)

Pair = tuple[float, float]


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

    points: list[Pair] = Field(min_length=3, max_length=MAX_POINTS)
    values: list[float]
    grid: Grid | None = None
    targets: list[Pair] | None = Field(None, min_length=1, max_length=MAX_TARGETS)
    variogram: VariogramSpec = VariogramSpec()
    neighbours: int | None = Field(None, ge=3, description="use only the k nearest points")

    @model_validator(mode="after")
    def _consistent(self) -> InterpolateParams:
        if len(self.values) != len(self.points):
            raise ValueError(f"{len(self.points)} points but {len(self.values)} values")
        if (self.grid is None) == (self.targets is None):
            raise ValueError("give exactly one of grid or targets")
        if self.grid is not None and self.grid.x.n * self.grid.y.n > MAX_TARGETS:
            raise ValueError(f"the grid has more than {MAX_TARGETS} nodes")
        return self


def _interpolate(params: InterpolateParams) -> dict[str, Any]:
    import numpy as np

    from twinstack.sim import kriging

    points, values = np.asarray(params.points), np.asarray(params.values)
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
                                          neighbours=params.neighbours)
    except ValueError as exc:
        raise ActionError(422, "invalid_params", str(exc), "params") from exc
    estimates, variances = result.estimates, result.variances
    if shape is not None:
        estimates, variances = estimates.reshape(shape), variances.reshape(shape)
    return {"estimates": estimates.tolist(), "variances": variances.tolist(),
            "shape": list(shape) if shape else [len(targets)], "variogram": variogram.as_dict()}


class KrigingService(ServiceBase):
    name: ClassVar[str] = "kriging"
    ports: ClassVar[Ports] = Ports(internal=7450, health=7451)

    async def start(self) -> None:
        """Fail at start, not at the first call, where the numerics are not installed."""
        try:
            await asyncio.to_thread(__import__, "twinstack.sim.kriging")
        except ImportError as exc:
            raise FatalError(ExitCode.CONFIG_ERROR, f"kriging needs numpy and scipy "
                             f"(pip install 'twinstack[compute]'): {exc}") from exc

    @action(allow=CALLERS)
    async def interpolate(self, call: Call, params: InterpolateParams) -> dict[str, Any]:
        """Estimates and kriging variances on a grid (ny x nx) or at target points."""
        started = time.perf_counter()
        result = await asyncio.to_thread(_interpolate, params)
        log.info("kriged %d points onto %s targets in %.3f s", len(params.points),
                 "x".join(map(str, result["shape"])), time.perf_counter() - started,
                 extra={"variogram": result["variogram"]})
        return result
