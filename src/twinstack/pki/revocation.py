"""Revoking certificates: each CA's CRL is both its signed public list and its record.

`twinstack certs revoke` adds a certificate's serial to the CRL of the CA that signed it (the
root or the intermediate) and re-signs that CRL; `twinstack certs crl` re-signs both with a fresh
nextUpdate. The CRL file is the only record of what was revoked. It is signed, so a damaged or
foreign file is refused instead of being replaced by an empty list, which would silently
un-revoke everything. Writers hold a lock file, so two revocations at once cannot lose one.

CRLs live in the PKI directory as PEM (``ca-crl.pem``, ``intermediate-crl.pem``): OpenSSL, and so
Python's ``ssl``, loads CRLs only from PEM files. gss serves them as DER at ``/pki/ca.crl`` and
``/pki/intermediate.crl``, the form RFC 5280 wants behind a distribution point.

Certificates are never removed from a CRL: serials are random 159-bit numbers and entries are
small, so the list stays short for a platform's lifetime.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from twinstack.pki.authority import (
    CA_CERT,
    CA_CRL,
    CLOCK_SKEW,
    CRL_DAYS,
    INTERMEDIATE_CERT,
    INTERMEDIATE_CRL,
    Authority,
    IssuerKind,
    write_crl,
)
from twinstack.pki.errors import PkiError

ISSUERS: tuple[IssuerKind, ...] = ("root", "intermediate")
CRL_FILES: dict[IssuerKind, str] = {"root": CA_CRL, "intermediate": INTERMEDIATE_CRL}
CA_FILES: dict[IssuerKind, str] = {"root": CA_CERT, "intermediate": INTERMEDIATE_CERT}
# The names gss serves each CA's CRL under: GET /pki/<name>.
CRL_URL_NAMES: dict[IssuerKind, str] = {"root": "ca.crl", "intermediate": "intermediate.crl"}
# A CRL with less than this left is re-signed by refresh_crls (run at `twinstack up` and hourly).
CRL_REFRESH_BEFORE = timedelta(days=4)

# RFC 5280 reason codes an operator may give. Left out: certificateHold (needs un-hold, which a
# list that never shrinks does not offer), removeFromCRL (delta CRLs only), aACompromise
# (attribute certificates only).
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "ca-compromise": x509.ReasonFlags.ca_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "privilege-withdrawn": x509.ReasonFlags.privilege_withdrawn,
}
_REASON_NAMES = {flag: name for name, flag in REASONS.items()}
_LOCK_FILE = ".crl.lock"


def crl_url(host: str, port: int, issuer: IssuerKind = "root") -> str:
    """Where gss's public listener serves `issuer`'s CRL (https: the platform has no plain
    HTTP listener; the CRL is signed, so the transport only needs to deliver it)."""
    if not 0 < port < 65536:
        raise PkiError(f"CRL port {port} is outside 1-65535")
    literal = f"[{host}]" if ":" in host else host
    return f"https://{literal}:{port}/pki/{CRL_URL_NAMES[issuer]}"


@dataclass(frozen=True)
class Revocation:
    """The outcome of `revoke`: which CA's list holds the serial, since when and why."""

    issuer: IssuerKind
    serial: int
    date: datetime
    reason: str
    crl: Path
    already: bool  # it was on the list before this call; nothing was changed


# --------------------------------------------------------------------------- reading


def _moment(now: datetime | None) -> datetime:
    """`now` (default: the clock) in UTC, whole seconds as CRLs hold them; naive means UTC."""
    if now is None:
        now = datetime.now(UTC)
    moment = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    return moment.replace(microsecond=0)


def _read(path: Path, what: str) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PkiError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None


def ca_certificate(pki_dir: Path, issuer: IssuerKind) -> x509.Certificate:
    """The root's or intermediate's certificate (no key needed: reading a status needs none)."""
    path = Path(pki_dir) / CA_FILES[issuer]
    data = _read(path, "the CA certificate")
    if data is None:
        raise PkiError(f"{path}: CA certificate not found (run `twinstack certs init`?)")
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        raise PkiError(f"{path}: not a PEM certificate") from None


def read_certificate(path: Path) -> x509.Certificate:
    """The first certificate of a PEM file: the leaf of a chain file."""
    data = _read(Path(path), "the certificate")
    if data is None:
        raise PkiError(f"{path}: file not found")
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        raise PkiError(f"{path}: no PEM certificate found") from None


def _signed_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def issuer_of(pki_dir: Path, certificate: x509.Certificate) -> IssuerKind:
    """Which of this PKI's CAs signed `certificate` (checked by signature, not by name)."""
    for issuer in ISSUERS:
        path = Path(pki_dir) / CA_FILES[issuer]
        if path.exists() and _signed_by(certificate, ca_certificate(pki_dir, issuer)):
            return issuer
    raise PkiError(f"{certificate.subject.rfc4514_string()} (serial "
                   f"{certificate.serial_number:x}) was not issued by the CAs in {pki_dir}")


def load_crl(pki_dir: Path, issuer: IssuerKind) -> x509.CertificateRevocationList | None:
    """`issuer`'s CRL, checked to be signed by it; None when there is none yet."""
    path = Path(pki_dir) / CRL_FILES[issuer]
    data = _read(path, "the CRL")
    if data is None:
        return None
    ca = ca_certificate(pki_dir, issuer)
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError:
        raise PkiError(f"{path}: not a PEM CRL; move it away to start an empty list "
                       "(everything it revoked is then valid again)") from None
    if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise PkiError(f"{path}: not signed by {CA_FILES[issuer]}; move it away to start an "
                       "empty list (everything it revoked is then valid again)")
    return crl


def revoked_entry(pki_dir: Path, certificate: x509.Certificate
                  ) -> tuple[IssuerKind, x509.RevokedCertificate | None]:
    """The issuing CA and the certificate's entry on its CRL (None: not revoked)."""
    issuer = issuer_of(pki_dir, certificate)
    crl = load_crl(pki_dir, issuer)
    entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_number) \
        if crl is not None else None
    return issuer, entry


def reason_of(entry: x509.RevokedCertificate) -> str:
    try:
        flag = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return "unspecified"
    return _REASON_NAMES.get(flag, flag.value)


def status_text(pki_dir: Path, certificate: x509.Certificate) -> str:
    """One line for `twinstack certs show --dir`: revoked or not, by which CA's list."""
    try:
        issuer, entry = revoked_entry(pki_dir, certificate)
        crl = load_crl(pki_dir, issuer)
    except PkiError as exc:
        return f"unknown: {exc}"
    if crl is None:
        return f"unknown: {CRL_FILES[issuer]} does not exist (run `twinstack certs crl`)"
    if entry is not None:
        return (f"YES, since {entry.revocation_date_utc.isoformat()} ({reason_of(entry)}; "
                f"{CRL_FILES[issuer]})")
    return (f"no ({CRL_FILES[issuer]} #{crl_number(crl)}, next update "
            f"{crl.next_update_utc.isoformat() if crl.next_update_utc else 'none'})")


def crl_number(crl: x509.CertificateRevocationList | None) -> int:
    """The CRL Number extension's value; 0 for no CRL (the first one signed is number 1)."""
    if crl is None:
        return 0
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def _locked(pki_dir: Path) -> Iterator[None]:
    """One writer of a PKI directory's CRLs at a time (read, add, re-sign, write)."""
    path = Path(pki_dir) / _LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise PkiError(f"{path}: cannot open the lock file: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _resign(pki_dir: Path, issuer: IssuerKind, add: list[x509.RevokedCertificate], *,
            days: float, now: datetime | None) -> x509.CertificateRevocationList:
    """Re-sign `issuer`'s CRL with its entries plus `add`; the caller holds the lock.

    The new lastUpdate is always later than the old one: among several valid CRLs of one CA,
    OpenSSL uses the one with the latest lastUpdate, and keeps the first it finds on a tie, so
    two revocations within a second must not produce two CRLs with the same time.
    """
    authority = Authority.load(pki_dir, issuer)
    old = load_crl(pki_dir, issuer)
    moment = _moment(now)
    if old is not None and moment - CLOCK_SKEW <= old.last_update_utc:
        moment = old.last_update_utc + CLOCK_SKEW + timedelta(seconds=1)
    entries = [*(old if old is not None else ()), *add]
    crl = authority.sign_crl(entries, number=crl_number(old) + 1, days=days, now=moment)
    write_crl(crl, Path(pki_dir) / CRL_FILES[issuer])
    return crl


def sign_crl(pki_dir: Path, issuer: IssuerKind, *, days: float = CRL_DAYS,
             now: datetime | None = None) -> x509.CertificateRevocationList:
    """Re-sign `issuer`'s CRL (same entries, next CRL number, nextUpdate `days` ahead)."""
    with _locked(pki_dir):
        return _resign(pki_dir, issuer, [], days=days, now=now)


def revoke(pki_dir: Path, certificate: x509.Certificate, *, reason: str = "unspecified",
           days: float = CRL_DAYS, now: datetime | None = None) -> Revocation:
    """Put `certificate` on the CRL of the CA that signed it and re-sign that CRL.

    Revoking twice changes nothing and says so. The root cannot be revoked by its own list:
    replacing it (`twinstack certs init --force`) is the only way to withdraw it.
    """
    if reason not in REASONS:
        raise PkiError(f"unknown reason {reason!r}; one of: {', '.join(REASONS)}")
    if certificate.issuer == certificate.subject and _signed_by(certificate, certificate):
        raise PkiError(f"{certificate.subject.rfc4514_string()} is self-signed (a root CA): "
                       "it cannot be revoked; replace the CA with `twinstack certs init --force`")
    issuer = issuer_of(pki_dir, certificate)
    path = Path(pki_dir) / CRL_FILES[issuer]
    serial = certificate.serial_number
    with _locked(pki_dir):
        old = load_crl(pki_dir, issuer)
        found = old.get_revoked_certificate_by_serial_number(serial) if old is not None else None
        if found is not None:
            return Revocation(issuer, serial, found.revocation_date_utc, reason_of(found), path,
                              already=True)
        moment = _moment(now)
        builder = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(moment)
        if reason != "unspecified":  # RFC 5280: leave the reason out rather than unspecified
            builder = builder.add_extension(x509.CRLReason(REASONS[reason]), critical=False)
        _resign(pki_dir, issuer, [builder.build()], days=days, now=moment)
    return Revocation(issuer, serial, moment, reason, path, already=False)


def refresh_crls(pki_dir: Path, *, days: float = CRL_DAYS,
                 refresh_before: timedelta = CRL_REFRESH_BEFORE,
                 now: datetime | None = None) -> list[Path]:
    """Re-sign each CA's CRL that is missing or has less than `refresh_before` to run.

    Run at start and periodically by whoever holds the CA keys (`twinstack up` does both);
    services stop checking revocation when a CRL is about to go stale rather than refuse every
    peer, so a missed refresh weakens checks instead of stopping the platform.
    """
    if refresh_before >= timedelta(days=days):
        raise PkiError(f"refresh_before ({refresh_before}) must be shorter than the CRL's "
                       f"validity ({days:g} days), or every call would re-sign")
    moment = _moment(now)
    written = []
    with _locked(pki_dir):
        for issuer in ISSUERS:
            crl = load_crl(pki_dir, issuer)
            due = crl is None or crl.next_update_utc is None \
                or crl.next_update_utc - moment < refresh_before
            if due:
                _resign(pki_dir, issuer, [], days=days, now=moment)
                written.append(Path(pki_dir) / CRL_FILES[issuer])
    return written
