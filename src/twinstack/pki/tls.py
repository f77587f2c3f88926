"""TLS contexts for the three channels, kept in step with the certificate files on disk.

A context is built once per listener or client and reloaded in place when the files change:
OpenSSL copies the certificate into each new connection, so new handshakes use the new
certificate while open connections carry on. A half-written file is skipped until the next check.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from twinstack.exitcodes import ExitCode, FatalError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    """Where a process finds its identity: certificate chain, private key and the trusted CA."""

    cert: Path
    key: Path
    ca: Path

    def check(self) -> None:
        for role, path in (("certificate", self.cert), ("key", self.key), ("CA", self.ca)):
            if not path.is_file():
                raise FatalError(ExitCode.CERTIFICATE_ERROR, f"{role} file {path} does not exist")

    def stamp(self) -> tuple[tuple[int, int, int], ...]:
        """What changes when any of the files is replaced or rewritten."""
        stamps = []
        for path in (self.cert, self.key, self.ca):
            try:
                st = path.stat()
                stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((0, 0, 0))
        return tuple(stamps)


def _base_context(purpose: ssl.Purpose) -> ssl.SSLContext:
    ctx = ssl.create_default_context(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
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
    """Contexts sharing one set of files, reloaded together when the files change on disk."""

    files: TlsFiles
    contexts: list[tuple[ssl.SSLContext, bool]] = field(default_factory=list)
    reloads: int = 0

    def __post_init__(self) -> None:
        self._stamp = self.files.stamp()

    def server(self, *, require_client_cert: bool) -> ssl.SSLContext:
        ctx = server_context(self.files, require_client_cert=require_client_cert)
        self.contexts.append((ctx, True))
        return ctx

    def client(self) -> ssl.SSLContext:
        ctx = client_context(self.files)
        self.contexts.append((ctx, True))
        return ctx

    def reload_if_changed(self) -> bool:
        """Reload every context if the files changed; keep the old ones if the new files are bad."""
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
