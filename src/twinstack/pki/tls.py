"""TLS contexts for the three channels, kept in step with the certificate files on disk.

A context is built once per listener or client and reloaded in place when the files change:
OpenSSL copies the certificate into each new connection, so new handshakes use the new
certificate while open connections carry on. A half-written file is skipped until the next check.

Every context follows Mozilla's "intermediate" profile without its DHE suites: TLS 1.2 and 1.3 only,
ECDHE key exchange, AEAD ciphers only (AES-GCM, ChaCha20-Poly1305), so no CBC suite (LUCKY13) exists
to pick. TLS 1.3 suites are all AEAD already (OpenSSL's defaults; Python cannot change them).
DHE is left out: every client with TLS 1.2 AEAD suites also has ECDHE, DHE costs several times the
CPU of ECDHE per handshake (a cheap lever for a handshake flood), the platform's certificates are
ECDSA (there is no DHE-ECDSA suite) and TLS 1.2 DHE would need a DH parameter file to ship.
Key exchange groups stay OpenSSL's defaults (X25519, P-256, P-384, P-521, X448; ffdhe2048 and up in
TLS 1.3 only), all strong: Python's ssl can only pin a single curve, which would drop X25519.

With a CRL directory, the contexts of a `ReloadingContexts` also refuse revoked peers (see
`pki.crlcheck`: CRLs are checked only while they are valid, so a stale CRL never locks out
every peer). One-off contexts (`server_context`, `client_context`) do not check revocation.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from twinstack.exitcodes import ExitCode, FatalError
from twinstack.pki.crlcheck import RevocationCheck, file_stamps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    """Where a process finds its identity: certificate chain, private key and the trusted CA,
    and optionally the directory with the CAs' CRLs (ca-crl.pem, intermediate-crl.pem and
    intermediate.pem: a PKI directory is one)."""

    cert: Path
    key: Path
    ca: Path
    crl_dir: Path | None = None

    def check(self) -> None:
        for role, path in (("certificate", self.cert), ("key", self.key), ("CA", self.ca)):
            if not path.is_file():
                raise FatalError(ExitCode.CERTIFICATE_ERROR, f"{role} file {path} does not exist")
        # The files inside may come and go (checking pauses meanwhile); a wrong directory is a
        # mistake to report at once rather than a silent absence of revocation checks.
        if self.crl_dir is not None and not self.crl_dir.is_dir():
            raise FatalError(ExitCode.CERTIFICATE_ERROR,
                             f"CRL directory {self.crl_dir} does not exist")

    def stamp(self) -> tuple[tuple[int, int, int], ...]:
        """What changes when any of the files is replaced or rewritten."""
        return file_stamps(self.cert, self.key, self.ca)


# TLS 1.2 suites of Mozilla's "intermediate" profile less DHE, in its order; RSA variants serve
# operators who bring RSA certificates. @SECLEVEL=2 keeps Python's floor on key sizes and digests.
TLS12_CIPHERS = ":".join((
    "@SECLEVEL=2",
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
))


def _base_context(purpose: ssl.Purpose) -> ssl.SSLContext:
    """TLS 1.2+ with AEAD suites only, and no renegotiation: nothing here uses it, and OpenSSL
    before 3.0 let a client make the server redo expensive handshakes on one connection.
    It trusts no CA until one is loaded: not ssl.create_default_context, whose client contexts
    also trust the system's store (144 public CAs here; ~6 ms to load in every context)."""
    server_side = purpose == ssl.Purpose.CLIENT_AUTH
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    return ctx


def _load(ctx: ssl.SSLContext, files: TlsFiles, *, own_cert: bool) -> None:
    try:
        if own_cert:
            ctx.load_cert_chain(files.cert, files.key)
        ctx.load_verify_locations(cafile=files.ca)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise FatalError(
            ExitCode.CERTIFICATE_ERROR,
            f"cannot load certificate {files.cert}, key {files.key} or CA {files.ca}: {exc}",
        ) from exc


def server_context(files: TlsFiles, *, require_client_cert: bool) -> ssl.SSLContext:
    """Internal channel: require_client_cert=True; health and public channels: False."""
    files.check()
    ctx = _base_context(ssl.Purpose.CLIENT_AUTH)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    # No session tickets (Mozilla: off). The ticket key lives as long as the context and is never
    # rotated; a TLS 1.2 ticket carries the session's master secret under it, so one stolen key
    # would decrypt every recorded session. Our clients do not resume sessions anyway.
    ctx.options |= ssl.OP_NO_TICKET
    ctx.num_tickets = 0
    _load(ctx, files, own_cert=True)
    return ctx


def client_context(files: TlsFiles | None = None, *, ca: Path | None = None) -> ssl.SSLContext:
    """mTLS client when given files; a one-way TLS client (trusting only `ca`) otherwise."""
    ctx = _base_context(ssl.Purpose.SERVER_AUTH)
    if files is not None:
        files.check()
        _load(ctx, files, own_cert=True)
    elif ca is not None:
        try:
            ctx.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            raise FatalError(ExitCode.CERTIFICATE_ERROR, f"cannot load CA {ca}: {exc}") from exc
    return ctx


@dataclass
class ReloadingContexts:
    """Contexts sharing one set of files, reloaded together when the files change on disk.

    `reload_if_changed` is meant to be called every few seconds: it also adds new CRLs and turns
    revocation checks on or off as CRLs appear or near their nextUpdate.
    """

    files: TlsFiles
    contexts: list[tuple[ssl.SSLContext, bool]] = field(default_factory=list)
    reloads: int = 0

    def __post_init__(self) -> None:
        self._stamp = self.files.stamp()
        self._client: ssl.SSLContext | None = None
        self.revocation: RevocationCheck | None = None
        if self.files.crl_dir is not None:
            self.files.check()
            self.revocation = RevocationCheck(self.files.crl_dir, self.files.ca)
            self.revocation.poll()

    def _track(self, ctx: ssl.SSLContext) -> ssl.SSLContext:
        if self.revocation is not None:
            self.revocation.install(ctx)
        self.contexts.append((ctx, True))
        return ctx

    def server(self, *, require_client_cert: bool) -> ssl.SSLContext:
        return self._track(server_context(self.files, require_client_cert=require_client_cert))

    def client(self) -> ssl.SSLContext:
        """The one client context of these files (a context serves any number of
        connections; each costs ~2.5 ms to build, most of it loading the key)."""
        if self._client is None:
            self._client = self._track(client_context(self.files))
        return self._client

    def reload_if_changed(self) -> bool:
        """Reload every context if the files changed (keeping the old ones if the new files are
        bad), and bring CRLs up to date. Returns whether the certificate was reloaded."""
        if self.revocation is not None:
            self.revocation.poll()
        stamp = self.files.stamp()
        if stamp == self._stamp:
            return False
        try:
            for ctx, own_cert in self.contexts:
                _load(ctx, self.files, own_cert=own_cert)
        except FatalError as exc:
            log.warning("certificate files changed but cannot be loaded yet: %s", exc.message)
            return False
        self._stamp = stamp
        self.reloads += 1
        log.info("reloaded certificate %s", self.files.cert)
        return True
