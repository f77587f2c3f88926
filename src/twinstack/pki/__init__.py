"""TwinStack PKI: cfssl-style CSR files, a root + intermediate CA, and issued mTLS certificates."""

from twinstack.pki.authority import (
    Authority,
    IssuedCertificate,
    describe_certificate,
    init_authority,
    write_issued,
)
from twinstack.pki.csr import CertificateRequest, load_request, request_hosts
from twinstack.pki.errors import PkiError

__all__ = [
    "Authority",
    "CertificateRequest",
    "IssuedCertificate",
    "PkiError",
    "describe_certificate",
    "init_authority",
    "load_request",
    "request_hosts",
    "write_issued",
]
