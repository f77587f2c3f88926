"""Spawner backends: how an LSS starts, watches and stops one compute service of a session.

Every backend implements `Spawner`; the LSS knows nothing else about them.
"""

from twinstack.spawners.base import ServiceSpec, Spawner, SpawnError

__all__ = ["ServiceSpec", "SpawnError", "Spawner"]
