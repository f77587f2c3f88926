"""Monitors of a plane of one E component: the on-the-fly DFT at chosen frequencies (the
field's phasors, accumulated as it runs: no time series kept) and snapshots every N steps."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from twinstack.sim.fit_td.grid import COMPONENTS, YeeGrid


@dataclass(frozen=True)
class PlaneMonitor:
    """The `component` of E on the grid plane nearest `position` across `axis` ("x", "y"
    or "z")."""

    name: str
    component: str
    axis: str
    position: float

    def placed(self, grid: YeeGrid, e: dict[str, np.ndarray]) -> Recorder:
        if self.component not in COMPONENTS:
            raise ValueError(f"monitor {self.name}: component must be one of "
                             f"{', '.join(COMPONENTS)}, not {self.component!r}")
        if self.axis not in ("x", "y", "z"):
            raise ValueError(f"monitor {self.name}: axis must be x, y or z, not {self.axis!r}")
        a = "xyz".index(self.axis)
        line = (grid.x, grid.y, grid.z)[a]
        if not line[0] <= self.position <= line[-1]:
            raise ValueError(f"monitor {self.name}: {self.axis} = {self.position:g} is outside "
                             f"the grid ({line[0]:g} .. {line[-1]:g})")
        if self.component[-1] == self.axis:  # edges along the axis: their centres
            centres = (line[1:] + line[:-1]) / 2
            index = int(np.abs(centres - self.position).argmin())
        else:
            index = int(np.abs(line - self.position).argmin())
        where: list[int | slice] = [slice(None)] * 3
        where[a] = index
        recorder = self._recorder(e[self.component], tuple(where))
        recorder.position = self.position
        return recorder

    def _recorder(self, array: np.ndarray, where: tuple[int | slice, ...]) -> Recorder:
        raise NotImplementedError


@dataclass(frozen=True)
class FieldDFT(PlaneMonitor):
    """The plane's phasors sum E(n dt) exp(-j 2 pi f n dt) dt at each of `frequencies`."""

    frequencies: tuple[float, ...] = ()

    def _recorder(self, array: np.ndarray, where: tuple[int | slice, ...]) -> Recorder:
        if not self.frequencies:
            raise ValueError(f"monitor {self.name}: a DFT needs at least one frequency")
        return DFTRecorder(array, where, np.asarray(self.frequencies, np.float64))


@dataclass(frozen=True)
class Snapshot(PlaneMonitor):
    """The plane every `every` steps."""

    every: int = 10

    def _recorder(self, array: np.ndarray, where: tuple[int | slice, ...]) -> Recorder:
        if self.every < 1:
            raise ValueError(f"monitor {self.name}: every must be at least 1 step")
        return SnapshotRecorder(array, where, self.every)


@dataclass
class Recorder:
    array: np.ndarray
    where: tuple[int | slice, ...]
    position: float = field(init=False, default=0.0)  # where the plane was asked for

    def record(self, step: int, t: float, dt: float, plane: np.ndarray) -> None:
        """Take the plane's values at whole step `step` (time t)."""
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def restore(self, saved: dict[str, np.ndarray]) -> None:
        raise NotImplementedError


@dataclass
class DFTRecorder(Recorder):
    frequencies: np.ndarray
    phasors: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        plane = self.array[self.where]
        self.phasors = np.zeros((self.frequencies.size, *plane.shape), np.complex128)

    def record(self, step: int, t: float, dt: float, plane: np.ndarray) -> None:
        turn = np.exp(-2j * np.pi * self.frequencies * t) * dt
        self.phasors += turn[:, None, None] * plane[None]

    def state(self) -> dict[str, np.ndarray]:
        return {"phasors": self.phasors}

    def restore(self, saved: dict[str, np.ndarray]) -> None:
        self.phasors[...] = saved["phasors"]


@dataclass
class SnapshotRecorder(Recorder):
    every: int
    frames: list[np.ndarray] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)

    def record(self, step: int, t: float, dt: float, plane: np.ndarray) -> None:
        if step % self.every == 0:
            self.frames.append(plane.copy())
            self.steps.append(step)

    def state(self) -> dict[str, np.ndarray]:
        shape = self.array[self.where].shape
        frames = np.stack(self.frames) if self.frames else np.zeros((0, *shape))
        return {"frames": frames, "steps": np.asarray(self.steps, np.int64)}

    def restore(self, saved: dict[str, np.ndarray]) -> None:
        self.frames = list(saved["frames"])
        self.steps = [int(s) for s in saved["steps"]]
