"""`twinstack`: the one entry point. Verbs: certs, serve, up, user, group, deploy, logs."""

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
        request, profile=args.profile, days=args.days, crl_url=args.crl_url)
    for path in write_issued(issued, args.out):
        print(path)


def _certs_show(args: argparse.Namespace) -> None:
    from functools import partial

    from twinstack.pki import describe_certificate
    from twinstack.pki.revocation import status_text

    status = partial(status_text, args.dir) if args.dir is not None else None
    print(describe_certificate(args.file, status))


def _certs_revoke(args: argparse.Namespace) -> None:
    from twinstack.pki.revocation import CRL_URL_NAMES, read_certificate, revoke

    done = revoke(args.dir, read_certificate(args.cert), reason=args.reason, days=args.days)
    if done.already:
        print(f"{args.cert}: serial {done.serial:x} was already revoked on "
              f"{done.date.isoformat()} ({done.reason}); nothing changed")
        return
    print(f"{args.cert}: serial {done.serial:x} revoked by the {done.issuer} CA "
          f"({done.reason}); {done.crl} re-signed. Services using it refuse the certificate "
          f"once they reload it; gss serves it at /pki/{CRL_URL_NAMES[done.issuer]}")


def _certs_crl(args: argparse.Namespace) -> None:
    from twinstack.pki.revocation import CRL_FILES, ISSUERS, sign_crl

    for issuer in ISSUERS:
        crl = sign_crl(args.dir, issuer, days=args.days)
        due = crl.next_update_utc.isoformat() if crl.next_update_utc else "never"
        print(f"{args.dir / CRL_FILES[issuer]}: {len(crl)} revoked, next update {due}")


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

    platform = Platform(args.data_dir, args.host, args.port, verbose=args.verbose,
                        database_url=args.database_url, lss_count=args.lss_count)
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


def _operator(args: argparse.Namespace, operation: str, **params: Any) -> dict[str, Any]:
    """Run an operator verb through `auth` if the platform is up, else on the database."""
    from twinstack.services.auth import ADMIN_OPERATIONS
    from twinstack.wire.errors import ActionError, ServiceUnavailable

    settings = load_settings(vars(args))
    model, run_offline = ADMIN_OPERATIONS[operation]
    validated = model.model_validate(params)
    if (settings.data_dir / "platform.json").exists():
        async def online() -> dict[str, Any]:
            async with _admin_client(settings, None, "auth") as client:
                return await client.call(operation, validated.model_dump())
        try:
            return asyncio.run(online())
        except ServiceUnavailable:
            print("twinstack: the platform does not answer; using the database directly",
                  file=sys.stderr)
        except ActionError as exc:
            raise FatalError(ExitCode.CONFIG_ERROR, exc.message) from exc

    from twinstack.services.database import database_url
    from twinstack.store import Database, StoreError

    db = Database(database_url(settings))
    try:
        db.migrate()
        with db.transaction() as s:
            return run_offline(s, validated)
    except StoreError as exc:
        raise FatalError(ExitCode.CONFIG_ERROR, str(exc)) from exc
    finally:
        db.dispose()


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise FatalError(ExitCode.USAGE, "the passwords differ")
    return first


def _user(args: argparse.Namespace) -> None:
    verb = args.user_verb
    if verb == "add":
        _operator(args, "user_add", name=args.name, password=_password(args), admin=args.admin)
        print(f"user {args.name} added")
    elif verb == "passwd":
        _operator(args, "user_passwd", name=args.name, password=_password(args))
        print(f"password of {args.name} changed")
    elif verb in ("disable", "enable"):
        reply = _operator(args, "user_disable", name=args.name, disabled=verb == "disable")
        print(f"user {args.name} {verb}d ({reply['tokens_revoked']} tokens revoked)")
    else:
        for user in _operator(args, "user_list")["users"]:
            flags = [f for f in ("admin", "disabled") if user[f]]
            print(f"{user['name']:20} {' '.join(flags)}")


def _group(args: argparse.Namespace) -> None:
    verb = args.group_verb
    if verb == "add":
        _operator(args, "group_add", name=args.name)
        print(f"group {args.name} added")
    elif verb in ("add-member", "remove-member"):
        _operator(args, "group_member", group=args.name, user=args.user,
                  remove=verb == "remove-member")
        print(f"{args.user} {'removed from' if verb == 'remove-member' else 'added to'} "
              f"{args.name}")
    else:
        for group in _operator(args, "group_list")["groups"]:
            print(f"{group['name']:20} {', '.join(group['members'])}")


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                        help="data directory of the platform (default ./data)")
    parser.add_argument("--database-url", default=argparse.SUPPRESS,
                        help="database URL, if not the SQLite file in the data directory")


def _deploy(args: argparse.Namespace) -> None:
    from twinstack import deploy

    if args.deploy_verb == "certs":
        written = deploy.ensure_certificates(args.pki, args.namespace, args.public_host,
                                             owner=args.owner)
        print(f"{len(written)} certificates issued in {args.pki}")
    elif args.deploy_verb == "secrets":
        print(json.dumps(deploy.secret_manifests(args.pki, args.namespace), indent=1))
    else:
        print(deploy.render(args.overlay, image_tag=args.image_tag, registry=args.registry,
                            namespace=args.namespace), end="")


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
    issue.add_argument("--crl-url", help="where the issuer's CRL is served (http or https), "
                       "e.g. https://GSS_HOST:7400/pki/ca.crl; written into the certificate")
    issue.set_defaults(run=_certs_issue)
    show = certs_verbs.add_parser("show", help="subject, SANs, issuer and validity of a PEM file")
    show.add_argument("file", type=Path)
    show.add_argument("--dir", type=Path, help="PKI directory: also say whether it is revoked")
    show.set_defaults(run=_certs_show)
    from twinstack.pki.revocation import REASONS

    revoke = certs_verbs.add_parser("revoke", help="put a certificate on its CA's CRL")
    revoke.add_argument("--dir", type=Path, required=True, help="PKI directory")
    revoke.add_argument("cert", type=Path, help="the certificate (PEM; of a chain, the first)")
    revoke.add_argument("--reason", choices=list(REASONS), default="unspecified",
                        help="RFC 5280 reason (default unspecified)")
    revoke.add_argument("--days", type=float, default=7, help="the re-signed CRL's validity")
    revoke.set_defaults(run=_certs_revoke)
    crl = certs_verbs.add_parser("crl", help="re-sign both CAs' CRLs (run before nextUpdate)")
    crl.add_argument("--dir", type=Path, required=True, help="PKI directory")
    crl.add_argument("--days", type=float, default=7, help="validity: the next update is due "
                     "this many days from now")
    crl.set_defaults(run=_certs_crl)

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
    up.add_argument("--database-url",
                    help="PostgreSQL URL (postgresql+psycopg://...); default SQLite in --data-dir")
    up.add_argument("--lss-count", type=int, default=1,
                    help="local session services to run here (0: only remote ones)")
    up.add_argument("--verbose", action="store_true",
                    help="keep every service's output in the foreground")
    up.set_defaults(run=_up)

    user = verbs.add_parser("user", help="manage users (through auth when the platform is up)")
    user_verbs = user.add_subparsers(dest="user_verb", required=True)
    for verb, text in (("add", "add a user"), ("passwd", "set a user's password"),
                       ("disable", "disable a user and revoke their tokens"),
                       ("enable", "enable a disabled user"), ("list", "list users")):
        sub = user_verbs.add_parser(verb, help=text)
        if verb != "list":
            sub.add_argument("name")
        if verb in ("add", "passwd"):
            sub.add_argument("--password-stdin", action="store_true",
                             help="read the password from the first line of stdin")
        if verb == "add":
            sub.add_argument("--admin", action="store_true", help="an administrator")
        _add_data_flags(sub)
        sub.set_defaults(run=_user)

    group = verbs.add_parser("group", help="manage groups (through auth when the platform is up)")
    group_verbs = group.add_subparsers(dest="group_verb", required=True)
    for verb, text in (("add", "add a group"), ("add-member", "add a user to a group"),
                       ("remove-member", "remove a user from a group"), ("list", "list groups")):
        sub = group_verbs.add_parser(verb, help=text)
        if verb != "list":
            sub.add_argument("name", help="group")
        if verb.endswith("member"):
            sub.add_argument("user")
        _add_data_flags(sub)
        sub.set_defaults(run=_group)

    deploy = verbs.add_parser("deploy", help="certificates, Secrets and manifests for "
                              "containers and Kubernetes")
    deploy_verbs = deploy.add_subparsers(dest="deploy_verb", required=True)
    certs_cmd = deploy_verbs.add_parser("certs", help="a PKI with every platform service's "
                                        "certificate (compose and Kubernetes names)")
    secrets_cmd = deploy_verbs.add_parser("secrets", help="print the certificate Secrets "
                                          "(kubectl apply -f -)")
    render_cmd = deploy_verbs.add_parser("render", help="print an overlay's manifests with "
                                         "your values")
    for sub in (certs_cmd, secrets_cmd):
        sub.add_argument("--pki", type=Path, required=True, help="PKI directory")
    for sub in (certs_cmd, secrets_cmd, render_cmd):
        sub.add_argument("--namespace", default="twinstack", help="Kubernetes namespace")
    certs_cmd.add_argument("--public-host", action="append", default=[],
                           help="a DNS name clients use for gss/auth/relay (repeatable)")
    certs_cmd.add_argument("--owner", type=int,
                           help="give the files to this uid (10001: the images' user)")
    render_cmd.add_argument("overlay", help="dev, production or gpu")
    render_cmd.add_argument("--image-tag", help="tag of twinstack-core and twinstack-compute")
    render_cmd.add_argument("--registry", help="registry prefix of the images")
    deploy.set_defaults(run=_deploy)

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
