"""Issuing the certificate a service or operator proves its identity with.

The subject says who: CN is the service name (`admin` for an operator) and a session's compute
service also carries `OU=session:<id>` (see `twinstack.wire.identity`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal

from twinstack.pki.authority import CA_CERT, Authority, write_issued
from twinstack.pki.csr import CertificateRequest
from twinstack.pki.tls import TlsFiles
from twinstack.wire.identity import SESSION_OU_PREFIX


def service_request(service: str, *, session: str | None = None,
                    hosts: Sequence[str] = ()) -> CertificateRequest:
    unit = f"{SESSION_OU_PREFIX}{session}" if session else "platform"
    return CertificateRequest.model_validate(
        {"CN": service, "hosts": list(hosts), "names": [{"O": "TwinStack", "OU": unit}]})


def issue_identity(pki_dir: Path, service: str, prefix: Path, *, session: str | None = None,
                   hosts: Sequence[str] = (), issuer: Literal["root", "intermediate"] = "root",
                   days: float = 365, not_before: datetime | None = None,
                   not_after: datetime | None = None) -> TlsFiles:
    """Issue and write PREFIX-chain.pem / PREFIX-key.pem; return the files a process loads."""
    issued = Authority.load(pki_dir, issuer=issuer).issue(
        service_request(service, session=session, hosts=hosts), days=days,
        not_before=not_before, not_after=not_after)
    write_issued(issued, prefix)
    return TlsFiles(cert=Path(f"{prefix}-chain.pem"), key=Path(f"{prefix}-key.pem"),
                    ca=pki_dir / CA_CERT)
