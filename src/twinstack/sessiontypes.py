"""Session types: which compute services each runs, what each service and so one session of
it needs, and how many sessions an LSS can hold by default.

Kept free of service code so that the settings (an LSS's default `capacity` and memory for
sessions) and gss (which services to start; what a session reserves on its node) read the
same declarations.

Default capacity: every LSS may get a session of any type, so it is sized for the most
demanding one:

    capacity = max(1, min(floor(cores / cpus), floor((memory_mb - reserve_mb) / memory_mb_per)))
    reserve_mb = max(512, memory_mb / 10)    # the OS, the LSS itself, page cache

where `cores` and `memory_mb` are what this process may use (CPU affinity and the cgroup's
cpu.max / memory.max where set, else the machine's), and `cpus` / `memory_mb_per` are the
largest declared needs of any session type (each the sum of its services' and one action's
memory). An LSS also tells gss the memory its sessions may take in all (`memory_mb -
reserve_mb`, or `--session-memory-mb`): gss places a session only where what the sessions
there reserve leaves room for it, so small sessions fill a node further than the capacity's
count of the largest ones would say. An LSS whose sessions run elsewhere (the Kubernetes
spawner) should be given `--capacity` (and `--session-memory-mb`) explicitly: its own pod is
not where they run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Needs:
    """What a compute service, or a session, takes on average: cores and resident memory."""

    cpus: float
    memory_mb: int

    def __add__(self, other: Needs) -> Needs:
        return Needs(self.cpus + other.cpus, self.memory_mb + other.memory_mb)


# Each compute service: resident memory idle with its kernels loaded, measured as a fresh
# process (the process spawner; one forked from the warm parent adds 17-23 MB of its own), and
# the cores it uses on average. Sessions are interactive and idle between calls: a busy one
# borrows idle cores (CPU shared too thinly slows sessions down, while memory shared too
# thinly kills them, so placement holds memory to what a node has and only weighs CPU).
SERVICE_NEEDS: dict[str, Needs] = {
    "kriging": Needs(cpus=0.25, memory_mb=125),        # 122 MB after its warm-up solve
    "model": Needs(cpus=0.02, memory_mb=90),           # 88 MB: the project's history in SQL
    "modeling": Needs(cpus=0.05, memory_mb=300),       # 302 MB: the OpenCascade kernel
    "cartesian-mesh": Needs(cpus=0.03, memory_mb=150),  # 74 MB, and its numba kernels
    "tet-mesh": Needs(cpus=0.03, memory_mb=150),       # 74 MB, and netgen's mesher
    "visualization": Needs(cpus=0.05, memory_mb=150),  # 74 MB, and its renderer
    "fit-td": Needs(cpus=0.1, memory_mb=250),          # 74 MB, and its numba kernels
    "phreeqc": Needs(cpus=0.1, memory_mb=200),         # 68 MB and 128 MB in its workers
}
# One action at a time per session has its planned memory (compute_memory_mb's default).
ACTION = Needs(cpus=0.0, memory_mb=512)

# Which compute services a session of each type runs (what gss starts and tells clients).
SESSION_TYPES: dict[str, tuple[str, ...]] = {
    "data analysis": ("kriging",),
    "3D simulation": ("model", "modeling", "cartesian-mesh", "tet-mesh", "visualization",
                      "fit-td"),
    "geochemistry": ("model", "phreeqc", "kriging", "visualization"),
}


def session_needs(services: Iterable[str]) -> Needs:
    """What one session of these services needs: theirs, and one action's memory."""
    return sum((SERVICE_NEEDS[name] for name in services), ACTION)


# What one session of each type needs: placement reserves it on the node it goes to.
SESSION_TYPE_NEEDS: dict[str, Needs] = {
    name: session_needs(services) for name, services in SESSION_TYPES.items()}


def reserved_memory_mb(memory_mb: float) -> float:
    """Memory kept for the OS and the platform's own processes."""
    return max(512.0, memory_mb / 10)


def capacity_for(cores: float, memory_mb: float, types: Iterable[Needs]) -> int:
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


def session_memory_mb() -> float:
    """The memory this machine's sessions may take in all: what it has less the reserve."""
    _, memory = machine_resources()
    return max(0.0, memory - reserved_memory_mb(memory))


def default_capacity() -> int:
    """This machine's default LSS capacity (see the module docstring for the formula)."""
    return capacity_for(*machine_resources(), SESSION_TYPE_NEEDS.values())
