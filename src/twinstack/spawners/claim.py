"""A compute service that waits, warmed up and of no session, until an LSS claims it: a pod of
the Kubernetes spawner's warm pool (`twinstack serve SERVICE --claim-bind 0.0.0.0:7452`).

While it waits it holds its pool identity (a certificate naming its pod, from the pool pod's
Secret), has done its kind's warm-up (`ServiceBase.warm_up`), answers its health port (so the
pod is Ready only once warmed up) and listens for one claim: mutual TLS, and only a peer
whose certificate says `lss` may claim it. The claim is one POST of JSON: the session, the
address to publish, the session's certificate and key (PEM), and the `twinstack serve`
arguments the LSS gives every service of the session (project, model, limits). The worker
checks all of it before it answers: a bad claim gets a 400 saying what is wrong, and the
worker goes on waiting. A good one is answered 200; then both listeners close, the identity
is written to its data directory (0600) and the service starts as if it had been started
with those arguments. Its health port then presents the session's certificate: that is how
the LSS knows the claimed service is up. SIGTERM while waiting ends it with 0.

Chosen: the session's key comes over the claim connection, as the certificate of a pod
started for its session comes in a Secret; both ends of that connection are verified against
the platform's CA, and the worker takes no claim but the LSS's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from twinstack.config import Address, Settings, load_settings, split_host_port
from twinstack.exitcodes import ExitCode, FatalError
from twinstack.pki.authority import replace_identity
from twinstack.pki.tls import TlsFiles, server_context
from twinstack.wire.identity import PeerIdentity

log = logging.getLogger(__name__)

CLAIM_PATH = "/claim"
MAX_CLAIM = 64 * 1024  # two PEM blocks and a few arguments
CLAIMER = "lss"
# what the claim sets itself: the LSS may not pass these as arguments
RESERVED = ("--claim-bind", "--session", "--publish", "--cert", "--key", "--ca", "--config")


class BadClaim(ValueError):
    """A claim this worker does not take; the message says why."""


class Claim(BaseModel):
    """What the LSS sends: the session, the address to publish, the session's certificate and
    key (PEM), and the `twinstack serve` arguments it gives every service of the session
    (checked against the claimed service's parser: `context={"service": ...}`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    publish: Address
    cert: str
    key: str
    args: tuple[str, ...]

    @field_validator("cert")
    @classmethod
    def _a_certificate(cls, value: str) -> str:
        if "BEGIN CERTIFICATE" not in value:
            raise ValueError("a PEM certificate chain")
        return value

    @field_validator("key")
    @classmethod
    def _a_key(cls, value: str) -> str:
        if "PRIVATE KEY" not in value:
            raise ValueError("a PEM private key")
        return value

    @field_validator("args")
    @classmethod
    def _serve_arguments(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if reserved := [a for a in value if a.split("=", 1)[0] in RESERVED]:
            raise ValueError(f"{reserved[0]} is set by the claim itself")
        from twinstack.cli import build_parser

        service = (info.context or {})["service"]
        try:
            build_parser().parse_args(["serve", service, *value])
        except SystemExit as exc:  # argparse has printed why to stderr
            raise ValueError(f"not arguments of `twinstack serve {service}`") from exc
        return value


def claim_body(session: str, publish: str, identity: TlsFiles,
               args: tuple[str, ...]) -> dict[str, Any]:
    """What the LSS sends (`Claim`, as JSON)."""
    return {"session": session, "publish": publish, "cert": identity.cert.read_text(),
            "key": identity.key.read_text(), "args": list(args)}


def parse_claim(service: str, body: Any) -> Claim:
    """The claim in `body`, checked as far as it can be before the service starts."""
    try:
        return Claim.model_validate(body, context={"service": service})
    except ValidationError as exc:
        raise BadClaim("; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'claim'}: "
            f"{err['msg'].removeprefix('Value error, ')}" for err in exc.errors())) from exc


class ClaimListener:
    """The waiting worker's two listeners and the one claim they wait for."""

    def __init__(self, service: str, settings: Settings) -> None:
        assert settings.claim_bind is not None
        if settings.cert is None or settings.key is None or settings.ca is None:
            raise FatalError(ExitCode.CONFIG_ERROR, "--claim-bind needs --cert, --key and "
                             "--ca: the pool identity the claim is verified against")
        from twinstack.services import load_service

        self.service = service
        self.settings = settings
        self.files = TlsFiles(settings.cert, settings.key, settings.ca)
        self.health = settings.health_bind or f"0.0.0.0:{load_service(service).ports.health}"
        self.claimed: asyncio.Future[Claim | None] | None = None

    async def _claim(self, request: web.Request) -> web.Response:
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        peer = PeerIdentity.from_peercert(peercert or {})
        if peer.service != CLAIMER:
            return web.json_response({"error": f"only the {CLAIMER} may claim a pool worker, "
                                      f"not {peer.service or 'an unnamed peer'}"}, status=403)
        assert self.claimed is not None
        if self.claimed.done():
            return web.json_response({"error": "already claimed"}, status=409)
        try:
            claim = parse_claim(self.service, await request.json())
        except (BadClaim, ValueError) as exc:
            return web.json_response({"error": f"bad claim: {exc}"}, status=400)
        self.claimed.set_result(claim)
        log.info("claimed by session %s", claim.session)
        return web.json_response({"claimed": self.service})

    def _stop(self) -> None:
        if self.claimed is not None and not self.claimed.done():
            self.claimed.set_result(None)

    @staticmethod
    async def _ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True, "pool": "waiting"})

    async def wait(self) -> Claim | None:
        """Serve until claimed (the claim) or SIGTERM (None); both listeners are closed then."""
        loop = asyncio.get_running_loop()
        self.claimed = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop)
        claims = web.Application(client_max_size=MAX_CLAIM)
        claims.router.add_post(CLAIM_PATH, self._claim)
        health = web.Application()
        for path in ("/readyz", "/healthz"):
            health.router.add_get(path, self._ready)
        runners = [web.AppRunner(claims, access_log=None), web.AppRunner(health, access_log=None)]
        try:
            for runner, address, client_cert in (
                    (runners[0], self.settings.claim_bind, True),
                    (runners[1], self.health, False)):
                assert address is not None
                await runner.setup()
                host, port = split_host_port(address)
                await web.TCPSite(runner, host, port, reuse_address=True, ssl_context=(
                    server_context(self.files, require_client_cert=client_cert))).start()
            log.info("%s waiting to be claimed at %s", self.service, self.settings.claim_bind)
            return await self.claimed
        finally:
            for runner in runners:
                await runner.cleanup()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def wait_for_claim(service: str, settings: Settings, flags: dict[str, Any]) -> Settings | None:
    """Warm up, wait for a claim, and return the settings the claimed service runs with: those
    of `flags` (a parsed `twinstack serve`, which gave `settings`) and the environment, with the
    claim's on top (None: stopped before any claim)."""
    import uvloop

    from twinstack.cli import build_parser
    from twinstack.services import load_service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    listener = ClaimListener(service, settings)
    load_service(service).warm_up()
    claim = uvloop.run(listener.wait())
    if claim is None:
        return None
    folder = Path(settings.data_dir or "/tmp") / "session-identity"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert, key = folder / "tls.crt", folder / "tls.key"
    replace_identity(cert, key, claim.cert.encode(), claim.key.encode())  # the key 0600
    given = build_parser().parse_args(["serve", service, *claim.args, "--session", claim.session,
                                       "--publish", claim.publish, "--cert", str(cert),
                                       "--key", str(key), "--identity-from",
                                       str(listener.files.cert.parent)])  # the pod's Secret
    return load_settings({**flags, **vars(given), "claim_bind": None})


# --- the claimant's side (the LSS) -----------------------------------------------------------


async def send_claim(address: str, pool_name: str, body: dict[str, Any],
                     client_tls: ssl.SSLContext, timeout: float) -> str | None:
    """Claim the worker at `address`, which must present the pool certificate naming
    `pool_name`: None once it has taken the claim, else why not (in words)."""
    from aiohttp import ClientError, ClientSession, ClientTimeout

    try:
        async with ClientSession(timeout=ClientTimeout(total=timeout)) as http, \
                http.post(f"https://{address}{CLAIM_PATH}", json=body, ssl=client_tls,
                          server_hostname=pool_name) as reply:
            if reply.status == 200:
                return None
            text = await reply.text()
    except (ClientError, TimeoutError, OSError) as exc:
        return repr(exc)
    with contextlib.suppress(ValueError, TypeError, KeyError):
        text = str(json.loads(text)["error"])
    return f"{reply.status}: {text[:200]}"


async def serves_as(http: Any, health: str, host: str, client_tls: ssl.SSLContext) -> bool:
    """Whether the health listener at `health` presents a certificate naming `host` (a claimed
    worker's session certificate, not its pool one) and says it is ready; `http` is an
    aiohttp ClientSession."""
    from aiohttp import ClientError

    with contextlib.suppress(ClientError, TimeoutError, OSError, ValueError):
        async with http.get(f"https://{health}/readyz", ssl=client_tls,
                            server_hostname=host) as reply:
            return reply.status == 200 and (await reply.json()).get("ready") is True
    return False
