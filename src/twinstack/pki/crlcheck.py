"""Checking peers' certificates against the CAs' CRLs, without ever refusing everyone.

OpenSSL checks revocation during the handshake once a context has `VERIFY_CRL_CHECK_CHAIN` and a
CRL of every CA in the chain; a missing, foreign or expired CRL then fails every handshake. So:

* a CRL is added to the contexts only after it parsed, its signature verified against the CA
  that issued it, and its validity window has begun: a damaged, foreign or not-yet-valid file
  is skipped and the CRL already in force stays in force;
* checking is on only while both CAs' CRLs (root and intermediate) are loaded and more than
  `STALE_MARGIN` away from their nextUpdate. Otherwise it is off, with an error in the log that
  says why, and it comes back on by itself when fresh CRLs appear. This fails open, loudly: a
  missed refresh weakens revocation, it does not stop the platform;
* OpenSSL can add a CRL to a context but never remove one; among several it uses the newest
  valid one. Each new CRL is added once, so memory grows by one CRL per re-signing.

`STALE_MARGIN` must exceed the polling interval (`cert_reload_seconds`, default 5 s).
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from twinstack.pki.authority import CA_CRL, INTERMEDIATE_CERT, INTERMEDIATE_CRL

log = logging.getLogger(__name__)

STALE_MARGIN = timedelta(minutes=5)
CRL_CHECK = ssl.VERIFY_CRL_CHECK_CHAIN  # the leaf and every CA above it
REQUIRED = (CA_CRL, INTERMEDIATE_CRL)

_Stamp = tuple[tuple[int, int, int], ...]


def file_stamps(*paths: Path) -> _Stamp:
    """What changes when any of the files is replaced or rewritten (missing: zeros)."""
    stamps = []
    for path in paths:
        try:
            st = path.stat()
            stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            stamps.append((0, 0, 0))
    return tuple(stamps)


def _certificates(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return []


def _signed_by(subject: x509.Certificate | x509.CertificateRevocationList,
               issuers: list[x509.Certificate]) -> bool:
    for issuer in issuers:
        try:
            if isinstance(subject, x509.Certificate):
                subject.verify_directly_issued_by(issuer)
                return True
            if subject.issuer == issuer.subject and \
                    subject.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return False


def add_crl(ctx: ssl.SSLContext, pem: bytes) -> None:
    """Add a CRL to a context's trust store: Python's ssl reads CRLs only from a PEM file, so
    exactly the bytes that were verified go through a private temporary file."""
    fd, name = tempfile.mkstemp(prefix="twinstack-crl-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        ctx.load_verify_locations(cafile=name)
    finally:
        os.unlink(name)


class RevocationCheck:
    """The CRLs in `crl_dir`, kept in force in every context handed to `install`."""

    def __init__(self, crl_dir: Path, ca: Path) -> None:
        self.crl_dir = crl_dir
        self.ca = ca
        self.active = False
        self.reason = "no CRL read yet"
        self.loaded: dict[str, x509.CertificateRevocationList] = {}
        self._pem: dict[str, bytes] = {}
        self._stamps: dict[str, _Stamp] = {}
        self._waiting: dict[str, tuple[x509.CertificateRevocationList, bytes]] = {}
        self._problems: dict[str, str] = {}
        self._contexts: list[ssl.SSLContext] = []

    def install(self, ctx: ssl.SSLContext) -> None:
        """Give a new context the CRLs in force and the current on/off state."""
        for pem in self._pem.values():
            add_crl(ctx, pem)
        self._contexts.append(ctx)
        self._set_flags(ctx)

    def poll(self, now: datetime | None = None) -> bool:
        """Read CRL files that changed, add those due to every context, and turn checking on
        or off. Returns whether a CRL was added."""
        moment = now or datetime.now(UTC)
        for name in REQUIRED:
            self._read_if_changed(name)
        added = False
        for name, (crl, pem) in list(self._waiting.items()):
            current = self.loaded.get(name)
            if current is not None and crl.last_update_utc <= current.last_update_utc:
                del self._waiting[name]  # not newer than what is in force
            elif crl.last_update_utc <= moment:
                del self._waiting[name]
                added |= self._add_everywhere(name, crl, pem)
        self._decide(moment)
        return added

    # ------------------------------------------------------------------------- internals

    def _issuers(self, name: str) -> list[x509.Certificate]:
        roots = _certificates(self.ca)
        if name == CA_CRL:
            return roots
        return [c for c in _certificates(self.crl_dir / INTERMEDIATE_CERT) if _signed_by(c, roots)]

    def _read_if_changed(self, name: str) -> None:
        path = self.crl_dir / name
        stamp = file_stamps(path, self.ca, self.crl_dir / INTERMEDIATE_CERT)
        if stamp == self._stamps.get(name):
            return
        self._stamps[name] = stamp
        self._waiting.pop(name, None)
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            self._problem(name, f"{path} does not exist")
            return
        except OSError as exc:
            self._problem(name, f"cannot read {path}: {exc.strerror or exc}")
            return
        try:
            crl = x509.load_pem_x509_crl(pem)
        except ValueError:
            self._problem(name, f"{path} is not a PEM CRL")
            return
        if not _signed_by(crl, self._issuers(name)):
            self._problem(name, f"{path} is not signed by a CA this service trusts")
            return
        self._problems.pop(name, None)
        self._waiting[name] = (crl, pem)

    def _problem(self, name: str, text: str) -> None:
        if self._problems.get(name) != text:
            log.warning("CRL skipped: %s", text)
        self._problems[name] = text

    def _add_everywhere(self, name: str, crl: x509.CertificateRevocationList,
                        pem: bytes) -> bool:
        try:
            for ctx in self._contexts:
                add_crl(ctx, pem)
        except (ssl.SSLError, OSError) as exc:
            self._problem(name, f"OpenSSL cannot load {self.crl_dir / name}: {exc}")
            return False
        self.loaded[name], self._pem[name] = crl, pem
        log.info("CRL %s loaded: %d revoked, next update %s", name,
                 len(crl), crl.next_update_utc.isoformat() if crl.next_update_utc else "none")
        return True

    def _why_off(self, moment: datetime) -> str | None:
        for name in REQUIRED:
            crl = self.loaded.get(name)
            if crl is None:
                return self._problems.get(name, f"{self.crl_dir / name} is not valid yet")
            if crl.next_update_utc is not None and \
                    moment >= crl.next_update_utc - STALE_MARGIN:
                return f"{self.crl_dir / name} is stale (next update was due " \
                       f"{crl.next_update_utc.isoformat()}); re-sign it: twinstack certs crl"
        return None

    def _decide(self, moment: datetime) -> None:
        reason = self._why_off(moment)
        active = reason is None
        if active != self.active or (reason is not None and reason != self.reason):
            if active:
                log.info("revocation checks on: peers' certificates are checked against %s",
                         ", ".join(REQUIRED))
            else:
                log.error("revocation checks OFF, revoked certificates are accepted: %s",
                          reason)
        self.active, self.reason = active, reason or "on"
        for ctx in self._contexts:
            self._set_flags(ctx)

    def _set_flags(self, ctx: ssl.SSLContext) -> None:
        if self.active:
            ctx.verify_flags |= CRL_CHECK
        else:
            ctx.verify_flags &= ~CRL_CHECK
