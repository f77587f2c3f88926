"""Issuing the certificate a service or operator proves its identity with.

The subject says who: CN is the service name (`admin` for an operator) and a session's compute
service also carries `OU=session:<id>` (see `twinstack.wire.identity`).

`ensure_identity` keeps an identity in step with what the platform needs now: it re-issues only
when the existing certificate no longer fits (other host names or CRL URL, close to expiry,
revoked, another CA) and otherwise leaves the files alone. A running service notices re-issued
files by itself (`pki.tls.ReloadingContexts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from twinstack.pki.authority import (
    CA_CERT,
    CLOCK_SKEW,
    Authority,
    IssuerKind,
    crl_urls,
    replace_identity,
    subject_alt_names,
    subject_name,
    write_issued,
)
from twinstack.pki.csr import CertificateRequest
from twinstack.pki.errors import PkiError
from twinstack.pki.revocation import ca_certificate, load_crl
from twinstack.pki.tls import TlsFiles
from twinstack.wire.identity import SESSION_OU_PREFIX

# Platform identities are re-issued when less than this is left of their (365-day) validity.
RENEW_BEFORE = timedelta(days=30)


def service_request(service: str, *, session: str | None = None,
                    hosts: Sequence[str] = ()) -> CertificateRequest:
    unit = f"{SESSION_OU_PREFIX}{session}" if session else "platform"
    return CertificateRequest.model_validate(
        {"CN": service, "hosts": list(hosts), "names": [{"O": "TwinStack", "OU": unit}]})


def identity_files(pki_dir: Path, prefix: Path) -> TlsFiles:
    """The files `issue_identity` writes for PREFIX: what a process loads."""
    return TlsFiles(cert=Path(f"{prefix}-chain.pem"), key=Path(f"{prefix}-key.pem"),
                    ca=Path(pki_dir) / CA_CERT)


def issue_identity(pki_dir: Path, service: str, prefix: Path, *, session: str | None = None,
                   hosts: Sequence[str] = (), issuer: IssuerKind = "root",
                   days: float = 365, not_before: datetime | None = None,
                   not_after: datetime | None = None, crl_url: str | None = None,
                   durable: bool = True) -> TlsFiles:
    """Issue and write PREFIX-chain.pem / PREFIX-key.pem; return the files a process loads.
    `durable=False` leaves out the fsyncs: for identities that need not outlive a power cut
    (a session's, whose processes would not either)."""
    issued = Authority.load(pki_dir, issuer=issuer).issue(
        service_request(service, session=session, hosts=hosts), days=days,
        not_before=not_before, not_after=not_after, crl_url=crl_url)
    write_issued(issued, prefix, durable=durable)
    return identity_files(pki_dir, prefix)


@dataclass(frozen=True)
class EnsuredIdentity:
    """An identity's files, and why they were (re-)issued (None: the existing ones were kept)."""

    files: TlsFiles
    reissued: str | None


def _load_existing(files: TlsFiles) -> tuple[list[x509.Certificate], bytes] | str:
    """The chain and the key's public part, or why they cannot be used."""
    try:
        chain = x509.load_pem_x509_certificates(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except FileNotFoundError as exc:
        return f"no certificate yet ({Path(exc.filename).name} is missing)"
    except (OSError, ValueError, TypeError) as exc:
        return f"the existing files cannot be read ({exc})"
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return chain, key.public_key().public_bytes(serialization.Encoding.DER, spki)


def _san_text(names: set[x509.GeneralName]) -> str:
    return ", ".join(sorted(str(name.value) for name in names))


def identity_mismatch(pki_dir: Path, files: TlsFiles, request: CertificateRequest, *,
                      issuer: IssuerKind = "root", crl_url: str | None = None,
                      renew_before: timedelta = RENEW_BEFORE,
                      now: datetime | None = None) -> str | None:
    """Why the identity in `files` does not fit what is wanted now; None when it does.

    Wanted: signed by `issuer` of `pki_dir`, with the subject and SANs `request` gives, exactly
    `crl_url` as its CRL Distribution Point (none when None), more than `renew_before` of
    validity left, not revoked, and the chain file holding the issuer's current chain.
    """
    loaded = _load_existing(files)
    if isinstance(loaded, str):
        return loaded
    chain, key_spki = loaded
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(serialization.Encoding.DER, spki) != key_spki:
        return "the key does not match the certificate"
    ca = ca_certificate(pki_dir, issuer)
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return f"it was not issued by the current {issuer} CA"
    expected_chain = [] if issuer == "root" else [ca]
    if chain[1:] != expected_chain:
        return "its chain file does not hold the issuer's current chain"
    want_subject = subject_name(request)
    if leaf.subject != want_subject:
        return f"its subject is {leaf.subject.rfc4514_string()}, not " \
               f"{want_subject.rfc4514_string()}"
    try:
        have = set(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        have = set()
    want = set(subject_alt_names(request))
    if have != want:
        changes = [f"{label} {_san_text(names)}" for label, names in
                   (("adds", want - have), ("drops", have - want)) if names]
        return f"the host names changed: the new certificate {' and '.join(changes)}"
    have_urls, want_urls = crl_urls(leaf), [crl_url] if crl_url else []
    if have_urls != want_urls:
        return f"its CRL URL is {', '.join(have_urls) or 'missing'}, not " \
               f"{crl_url or 'none'}"
    moment = now or datetime.now(UTC)
    left = leaf.not_valid_after_utc - moment
    if left <= timedelta(0):
        return "it has expired"
    if left < renew_before:
        return f"it expires on {leaf.not_valid_after_utc.date().isoformat()}, within the " \
               f"{renew_before.days}-day renewal window"
    crl = load_crl(pki_dir, issuer)
    if crl is not None and crl.get_revoked_certificate_by_serial_number(leaf.serial_number):
        return "it was revoked"
    return None


def ensure_identity(pki_dir: Path, service: str, prefix: Path, *,
                    hosts: Sequence[str] = (), crl_url: str | None = None,
                    session: str | None = None, issuer: IssuerKind = "root",
                    days: float = 365, renew_before: timedelta = RENEW_BEFORE,
                    now: datetime | None = None, durable: bool = True) -> EnsuredIdentity:
    """Keep PREFIX's certificate if it still fits (`identity_mismatch`), else issue a new one
    (`durable`: see issue_identity).

    `now` (default: the clock) is the moment the certificate is judged at and a new one starts.

    The replaced certificate is not revoked: its key is overwritten in the same step, so
    nothing can use it any more, and the CRL does not grow with every address change.
    """
    if renew_before >= timedelta(days=days):
        raise PkiError(f"renew_before ({renew_before}) must be shorter than the validity "
                       f"({days:g} days), or every call would re-issue")
    files = identity_files(pki_dir, prefix)
    request = service_request(service, session=session, hosts=hosts)
    reason = identity_mismatch(pki_dir, files, request, issuer=issuer, crl_url=crl_url,
                               renew_before=renew_before, now=now)
    if reason is not None:
        issue_identity(pki_dir, service, prefix, session=session, hosts=hosts, issuer=issuer,
                       days=days, crl_url=crl_url, durable=durable,
                       not_before=None if now is None else now - CLOCK_SKEW)
    return EnsuredIdentity(files, reason)


def follow_identity(source: Path, files: TlsFiles, session: str | None) -> bool:
    """Copy SOURCE/tls.crt and SOURCE/tls.key over `files` when they differ and are a matching
    certificate and key of `session` (a claimed warm pool pod's mounted Secret, where the LSS
    writes its renewals); whether it did. Anything else there (the pool's own certificate, a
    half-written pair) is left alone."""
    try:
        cert, key = (source / "tls.crt").read_bytes(), (source / "tls.key").read_bytes()
        if cert == files.cert.read_bytes() and key == files.key.read_bytes():
            return False
        leaf = x509.load_pem_x509_certificate(cert)
        private = serialization.load_pem_private_key(key, password=None)
    except (OSError, ValueError):
        return False
    units = [a.value for a in leaf.subject.get_attributes_for_oid(
        x509.NameOID.ORGANIZATIONAL_UNIT_NAME)]
    same_key = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == \
        leaf.public_key().public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    if session is None or f"{SESSION_OU_PREFIX}{session}" not in units or not same_key:
        return False
    replace_identity(files.cert, files.key, cert, key)
    return True
