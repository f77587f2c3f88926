"""Who is on the other end of a mutual-TLS connection, read from its verified certificate.

Convention: the subject's CN names the service (`gss`, `lss`, `kriging`, or `admin` for an
operator); a compute service's certificate also carries `OU=session:<id>` for its session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SESSION_OU_PREFIX = "session:"


@dataclass(frozen=True)
class PeerIdentity:
    service: str
    session: str | None = None

    @classmethod
    def from_peercert(cls, peercert: dict[str, Any]) -> PeerIdentity:
        """Build from `SSLObject.getpeercert()`, which only returns certificates that verified."""
        attributes = [pair for rdn in peercert.get("subject", ()) for pair in rdn]
        common_names = [value for key, value in attributes if key == "commonName"]
        units = [value for key, value in attributes if key == "organizationalUnitName"]
        sessions = [u.removeprefix(SESSION_OU_PREFIX) for u in units
                    if u.startswith(SESSION_OU_PREFIX)]
        return cls(service=common_names[0] if common_names else "",
                   session=sessions[0] if sessions else None)

    def __str__(self) -> str:
        return self.service if self.session is None else f"{self.service}@{self.session}"
