"""The services `twinstack serve` can run, imported only when chosen (lean start-up)."""

from __future__ import annotations

import importlib

from twinstack.exitcodes import ExitCode, FatalError
from twinstack.wire.runtime import ServiceBase

SERVICES: dict[str, str] = {
    "logger": "twinstack.services.logger:LoggerService",
    "kriging": "twinstack.services.kriging:KrigingService",
    "model": "twinstack.services.model:ModelService",
    "modeling": "twinstack.services.modeling:ModelingService",
    "cartesian-mesh": "twinstack.services.cartesian_mesh:CartesianMeshService",
    "tet-mesh": "twinstack.services.tet_mesh:TetMeshService",
    "visualization": "twinstack.services.visualization:VisualizationService",
    "fit-td": "twinstack.services.fit_td:FitTdService",
    "phreeqc": "twinstack.services.phreeqc:PhreeqcService",
    "lss": "twinstack.services.lss:LssService",
    "gss": "twinstack.services.gss:GssService",
    "auth": "twinstack.services.auth:AuthService",
    "relay": "twinstack.services.relay:RelayService",
}


def load_service(name: str) -> type[ServiceBase]:
    if name not in SERVICES:
        raise FatalError(ExitCode.CONFIG_ERROR,
                         f"unknown service {name!r}; known: {', '.join(sorted(SERVICES))}")
    module, _, attr = SERVICES[name].partition(":")
    return getattr(importlib.import_module(module), attr)
