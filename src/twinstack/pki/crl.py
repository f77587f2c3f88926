"""Serving the CAs' CRLs over HTTP(S): `GET /pki/ca.crl` and `GET /pki/intermediate.crl`.

gss adds these routes to its public listener. They need no token: a CRL is public and signed, and
whoever checks a platform certificate must be able to fetch it before trusting anything. The file
is read on each request, so a CRL re-signed by `twinstack certs revoke` or `certs crl` is served
at once. The body is DER with `application/pkix-crl` (RFC 5280 §4.2.1.13, RFC 2585), the form a
CRL Distribution Point promises; the PEM on disk is converted on the way out.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from twinstack.pki.revocation import CRL_FILES, CRL_URL_NAMES
from twinstack.wire.errors import ActionError

CONTENT_TYPE = "application/pkix-crl"
# Caches (and clients) may keep a CRL this long, never past its nextUpdate: a new revocation
# reaches fetching clients within five minutes.
MAX_AGE_SECONDS = 300


def _error(status: int, code: str, message: str) -> web.Response:
    body = {"error": ActionError(status, code, message).to_json()}
    return web.json_response(body, status=status)


def _read_der(path: Path) -> tuple[bytes, x509.CertificateRevocationList] | None:
    """The CRL as DER and parsed, or None when the file does not exist."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    crl = x509.load_pem_x509_crl(data)
    return crl.public_bytes(serialization.Encoding.DER), crl


def _handler(path: Path | None, name: str) -> web.RouteDef:
    async def serve(request: web.Request) -> web.Response:
        if path is None:
            return _error(404, "not_found", f"this service publishes no CRL ({name})")
        try:
            found = await asyncio.to_thread(_read_der, path)
        except (OSError, ValueError):
            return _error(503, "unavailable", f"the CRL {name} cannot be read just now; "
                          "try again later")
        if found is None:
            return _error(404, "not_found", f"no CRL {name} has been published")
        der, crl = found
        etag = f'"{hashlib.sha256(der).hexdigest()[:32]}"'
        headers = {"ETag": etag,
                   "Cache-Control": f"public, max-age={_max_age(crl)}, no-transform",
                   "Last-Modified": format_datetime(crl.last_update_utc, usegmt=True)}
        if etag in _etags(request.headers.get("If-None-Match", "")):
            return web.Response(status=304, headers=headers)
        return web.Response(body=der, content_type=CONTENT_TYPE, headers=headers)

    return web.get(f"/pki/{name}", serve)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def _max_age(crl: x509.CertificateRevocationList) -> int:
    """At most MAX_AGE_SECONDS, and never beyond the CRL's nextUpdate."""
    if crl.next_update_utc is None:
        return MAX_AGE_SECONDS
    left = (crl.next_update_utc - datetime.now(UTC)).total_seconds()
    return max(0, min(MAX_AGE_SECONDS, int(left)))


def crl_routes(crl_dir: Path | None) -> list[web.RouteDef]:
    """`GET /pki/ca.crl` and `/pki/intermediate.crl`, read from `crl_dir` (None: both 404)."""
    return [_handler(None if crl_dir is None else Path(crl_dir) / CRL_FILES[issuer], name)
            for issuer, name in CRL_URL_NAMES.items()]
