"""Session types: which compute services each runs, what one session of it needs, and how many
sessions an LSS can hold by default.

Kept free of service code so that the settings (an LSS's default `capacity`) and gss (which
services to start) read the same declarations.

Default capacity: every LSS may get a session of any type, so it is sized for the most
demanding one:

    capacity = max(1, min(floor(cores / cpus), floor((memory_mb - reserve_mb) / memory_mb_per)))
    reserve_mb = max(512, memory_mb / 10)    # the OS, the LSS itself, page cache

where `cores` and `memory_mb` are what this process may use (CPU affinity and the cgroup's
cpu.max / memory.max where set, else the machine's), and `cpus` / `memory_mb_per` are the
largest declared needs of any session type. An LSS whose sessions run elsewhere (the
Kubernetes spawner) should be given `--capacity` explicitly: its own pod is not where they run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SessionType:
    """The compute services a session runs, and what one session needs on average."""

    services: tuple[str, ...]
    cpus: float
    memory_mb: int


SESSION_TYPE_NEEDS: dict[str, SessionType] = {
    # One kriging process: ~120 MB resident when idle, plus one action's planned memory
    # (compute_memory_mb, 512 MB by default). Its sessions are interactive and idle between
    # calls: a quarter of a core each on average (a busy one borrows idle cores; CPU shared
    # too thinly slows sessions down, while memory shared too thinly kills them).
    "data analysis": SessionType(services=("kriging",), cpus=0.25, memory_mb=768),
    # The model service (~90 MB, idle but for the database), modeling (the OpenCascade kernel,
    # ~200 MB with a few solids), the two meshers, visualization and fit-td (~150-250 MB each
    # with their kernels loaded) and one action's planned memory. CAD and meshing are
    # interactive: short bursts of one core; a solver run takes the cores it is given while
    # it runs.
    "3D simulation": SessionType(
        services=("model", "modeling", "cartesian-mesh", "tet-mesh", "visualization",
                  "fit-td"),
        cpus=0.25, memory_mb=2304),
    # The model service, phreeqc (~60 MB, and worker processes with PHREEQC and a database,
    # ~40 MB each: one per core up to 4, plus one for a running job), kriging (~120 MB) and
    # visualization (~150 MB) and one action's planned memory. Speciating and kriging are
    # short bursts of one core (a speciation of many samples, of each worker's).
    "geochemistry": SessionType(
        services=("model", "phreeqc", "kriging", "visualization"), cpus=0.25,
        memory_mb=1536),
}

# Which compute services a session of each type runs (what gss starts and tells clients).
SESSION_TYPES: dict[str, tuple[str, ...]] = {
    name: kind.services for name, kind in SESSION_TYPE_NEEDS.items()}


def reserved_memory_mb(memory_mb: float) -> float:
    """Memory kept for the OS and the platform's own processes."""
    return max(512.0, memory_mb / 10)


def capacity_for(cores: float, memory_mb: float, types: Iterable[SessionType]) -> int:
    """How many sessions of the most demanding type fit in `cores` and `memory_mb` (>= 1)."""
    kinds = list(types)
    if not kinds:
        raise ValueError("no session types declared")
    cpus = max(kind.cpus for kind in kinds)
    memory = max(kind.memory_mb for kind in kinds)
    by_cpu = math.floor(cores / cpus + 1e-9)
    by_memory = math.floor(max(0.0, memory_mb - reserved_memory_mb(memory_mb)) / memory)
    return max(1, min(by_cpu, by_memory))


def cgroup_cpus(cpu_max: str) -> float | None:
    """The CPU limit in a cgroup v2 `cpu.max` ("QUOTA PERIOD", or "max PERIOD": none)."""
    quota, _, period = cpu_max.strip().partition(" ")
    if quota == "max" or not period:
        return None
    return int(quota) / int(period)


def cgroup_memory_mb(memory_max: str) -> float | None:
    """The memory limit in a cgroup v2 `memory.max` (bytes, or "max": none)."""
    text = memory_max.strip()
    return None if text == "max" else int(text) / 2**20


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def machine_resources(cgroup: Path = Path("/sys/fs/cgroup"),
                      meminfo: Path = Path("/proc/meminfo")) -> tuple[float, float]:
    """(cores, memory in MB) this process may use: the tighter of the machine and its cgroup."""
    cores = float(len(os.sched_getaffinity(0)))
    if (text := _read(cgroup / "cpu.max")) is not None and (limit := cgroup_cpus(text)):
        cores = min(cores, limit)
    memory = 0.0
    for line in (_read(meminfo) or "").splitlines():
        key, _, rest = line.partition(":")
        if key == "MemTotal":
            memory = int(rest.split()[0]) / 1024
    if (text := _read(cgroup / "memory.max")) is not None and \
            (cap := cgroup_memory_mb(text)) is not None:
        memory = min(memory, cap) if memory else cap
    return cores, memory


def default_capacity() -> int:
    """This machine's default LSS capacity (see the module docstring for the formula)."""
    return capacity_for(*machine_resources(), SESSION_TYPE_NEEDS.values())
