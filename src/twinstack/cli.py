"""`twinstack`: the one entry point. Verbs: certs, serve, up, logs."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from twinstack.config import Settings, add_setting_flags, load_settings
from twinstack.exitcodes import ExitCode, FatalError


def _certs_init(args: argparse.Namespace) -> None:
    from twinstack.pki import init_authority

    init_authority(args.dir, name=args.name, days=args.days, force=args.force)
    print(f"root CA and intermediate CA written to {args.dir}")


def _certs_issue(args: argparse.Namespace) -> None:
    from twinstack.pki import Authority, load_request, write_issued

    request = load_request(args.csr, hostname=args.hostname, ip_address=args.ip_address)
    issued = Authority.load(args.dir, issuer=args.issuer).issue(
        request, profile=args.profile, days=args.days)
    for path in write_issued(issued, args.out):
        print(path)


def _certs_show(args: argparse.Namespace) -> None:
    from twinstack.pki import describe_certificate

    print(describe_certificate(args.file))


def _serve(args: argparse.Namespace) -> int:
    from twinstack import logs
    from twinstack.services import load_service
    from twinstack.wire.runtime import serve

    settings = load_settings(vars(args))
    logs.configure(args.service, level=settings.log_level, verbose=settings.verbose,
                   session=settings.session)
    log = logging.getLogger("twinstack.serve")
    try:
        return asyncio.run(serve(load_service(args.service), settings))
    except FatalError as exc:
        log.error("cannot run %s: %s", args.service, exc.message, extra={"exit_code": exc.code})
        raise
    except Exception:
        log.exception("%s stopped by an unexpected error", args.service)
        return ExitCode.INTERNAL_ERROR


def _up(args: argparse.Namespace) -> int:
    from twinstack.launcher import Platform

    platform = Platform(args.data_dir, args.host, args.port, verbose=args.verbose)
    return asyncio.run(platform.run())


def _admin_client(settings: Settings, url: str | None, what: str) -> Any:
    """An mTLS client for admin verbs: flags and env first, else the `twinstack up` data dir."""
    from twinstack.launcher import admin_identity
    from twinstack.pki.tls import TlsFiles, client_context
    from twinstack.wire.client import ServiceClient

    platform_file = settings.data_dir / "platform.json"
    if url is None and platform_file.exists():
        url = json.loads(platform_file.read_text()).get(f"{what}_url")
    if url is None:
        raise FatalError(ExitCode.CONFIG_ERROR,
                         f"give the {what}'s address (--{what}-url), or --data-dir of a running "
                         "`twinstack up`")
    if settings.cert and settings.key and settings.ca:
        files = TlsFiles(settings.cert, settings.key, settings.ca)
    else:
        files = admin_identity(settings.data_dir)
    return ServiceClient(url, client_context(files))


async def _print_logs(args: argparse.Namespace, settings: Settings) -> None:
    from twinstack.logs import format_human
    from twinstack.wire.errors import ActionError

    query: dict[str, Any] = {"service": args.service, "session": args.session,
                             "level": args.level}
    query = {k: v for k, v in query.items() if v is not None}
    show = (lambda rec: json.dumps(rec)) if args.json else format_human
    async with _admin_client(settings, settings.logger_url, "logger") as client:
        try:
            reply = await client.call("query", {**query, "limit": args.limit}, idempotent=True)
            for rec in reply["records"]:
                print(show(rec), flush=True)
            if args.follow:
                async for rec in client.stream("follow", query):
                    print(show(rec), flush=True)
        except ActionError as exc:
            code = ExitCode.DEPENDENCY_UNREACHABLE if exc.status == 503 else ExitCode.USAGE
            raise FatalError(code, f"logger: {exc}") from exc


def _logs(args: argparse.Namespace) -> None:
    settings = load_settings(vars(args))
    asyncio.run(_print_logs(args, settings))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twinstack", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)

    certs = verbs.add_parser("certs", help="the PKI: CA, certificates from CSR JSON files")
    certs_verbs = certs.add_subparsers(dest="certs_verb", required=True)
    init = certs_verbs.add_parser("init", help="create a root CA and the sessions' intermediate")
    init.add_argument("--dir", type=Path, required=True, help="PKI directory")
    init.add_argument("--name", default="TwinStack", help="organisation named in the CAs")
    init.add_argument("--days", type=int, default=3650, help="CA validity")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(run=_certs_init)
    issue = certs_verbs.add_parser("issue", help="issue a certificate from a cfssl-style CSR JSON")
    issue.add_argument("--dir", type=Path, required=True, help="PKI directory")
    issue.add_argument("--csr", type=Path, required=True, help="CSR JSON file")
    issue.add_argument("--out", type=Path, required=True,
                       help="writes OUT.pem, OUT-key.pem and OUT-chain.pem")
    issue.add_argument("--profile", choices=["server", "client", "peer"], default="peer",
                       help="server, client or both (peer; default)")
    issue.add_argument("--issuer", choices=["root", "intermediate"], default="root")
    issue.add_argument("--days", type=float, default=365, help="validity")
    issue.add_argument("--hostname", help="value for $HOSTNAME$ (default: this host's name)")
    issue.add_argument("--ip-address", help="value for $IP_ADDRESS$ (default: this host's IP)")
    issue.set_defaults(run=_certs_issue)
    show = certs_verbs.add_parser("show", help="subject, SANs, issuer and validity of a PEM file")
    show.add_argument("file", type=Path)
    show.set_defaults(run=_certs_show)

    serve = verbs.add_parser("serve", help="run one service (the container entrypoint)")
    serve.add_argument("service", help="which service, e.g. logger")
    add_setting_flags(serve)
    serve.set_defaults(run=_serve)

    up = verbs.add_parser("up", help="run a whole local platform (dev PKI, separate processes)")
    up.add_argument("--data-dir", type=Path, default=Path("data"),
                    help="certificates, database and logs live here (default ./data)")
    up.add_argument("--host", default="127.0.0.1",
                    help="address every service binds (default 127.0.0.1; 0.0.0.0 for all)")
    up.add_argument("--port", type=int, default=7400,
                    help="front-door port; the other services use the ports above it")
    up.add_argument("--verbose", action="store_true",
                    help="keep every service's output in the foreground")
    up.set_defaults(run=_up)

    logs = verbs.add_parser("logs", help="query and follow the logger service")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    logs.add_argument("--service", dest="service", help="only this service's records")
    logs.add_argument("--session", dest="session", help="only this session's records")
    logs.add_argument("--level", choices=["debug", "info", "warning", "error", "critical"],
                      help="lowest level shown")
    logs.add_argument("--limit", type=int, default=200, help="how many past records to show")
    logs.add_argument("--json", action="store_true", help="JSON lines instead of text")
    add_setting_flags(logs, skip=("session",))
    logs.set_defaults(run=_logs)
    return parser


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from twinstack.pki import PkiError

    try:
        code = args.run(args)
    except FatalError as exc:
        print(f"twinstack: {exc.message}", file=sys.stderr)
        return int(exc.code)
    except PkiError as exc:
        print(f"twinstack: {exc}", file=sys.stderr)
        return int(ExitCode.CERTIFICATE_ERROR)
    except KeyboardInterrupt:
        return int(ExitCode.OK)
    return int(code or 0)


def main() -> None:
    sys.exit(run())
