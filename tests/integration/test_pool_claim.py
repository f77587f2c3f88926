"""A warm pool's worker (`twinstack serve SERVICE --claim-bind`, what a pool pod runs) as a
real process: it waits with its pool identity, takes a claim only from the LSS and only a
well-formed one, then serves the claiming session with the session's certificate, refusing
another session's peers, and takes no second claim."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import urllib.error
import urllib.request

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.conftest import free_port, served_certificate
from tests.platform_fixtures import wait_until
from twinstack.pki.identity import issue_identity
from twinstack.pki.tls import client_context
from twinstack.spawners.claim import claim_body, send_claim, serves_as

SESSION = "5e55101acafe4d0c9d2e7a1b3c4d5e6f"
POOL_POD = "pool-kriging-0a1b2c3d"
HOST = "kriging-5e55101acafe.twinstack.svc"  # the name the session's certificate gives
POINTS = {"points": [[0, 0], [1, 0], [0, 1], [1, 1]], "values": [1, 2, 3, 4],
          "targets": [[0.5, 0.5]]}


def claim(address: str, name: str, body: dict, tls: ssl.SSLContext) -> str | None:
    return asyncio.run(send_claim(address, name, body, tls, timeout=30.0))


def serves(health: str, host: str, tls: ssl.SSLContext) -> bool:
    async def probe() -> bool:
        async with aiohttp.ClientSession() as http:
            return await serves_as(http, health, host, tls)
    return asyncio.run(probe())


@pytest.fixture
def worker(pki, services, tmp_path):
    pool = issue_identity(pki.dir, "kriging", tmp_path / POOL_POD, session=POOL_POD,
                          hosts=[POOL_POD], issuer="intermediate")
    claim_at, health = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    proc, ready_file, output = services.spawn("kriging", pool, "--claim-bind", claim_at,
                                              "--health-bind", health,
                                              "--cert-reload-seconds", "0.1")
    lss = client_context(pki.identity("lss"))
    wait_until(lambda: serves(health, POOL_POD, lss) or proc.poll() is not None,
               what="the pool worker waiting")
    assert proc.poll() is None, output.read_text()
    return proc, ready_file, output, claim_at, health, lss


def test_a_claimed_worker_serves_its_session_with_the_session_certificate(pki, worker,
                                                                          tmp_path):
    proc, ready_file, output, claim_at, health, lss = worker
    session = issue_identity(pki.dir, "kriging", tmp_path / "session", session=SESSION,
                             hosts=[HOST], issuer="intermediate")
    body = claim_body(SESSION, "127.0.0.1:1", session, ())

    assert not serves(health, HOST, lss)  # waiting: its health port shows the pool identity
    assert not ready_file.exists()
    # only the LSS may claim it: not the relay, and not a client without a certificate
    refused = claim(claim_at, POOL_POD, body, client_context(pki.identity("relay")))
    assert refused is not None and refused.startswith("403") and "only the lss" in refused
    unanswered = claim(claim_at, POOL_POD, body, client_context(ca=pki.ca))
    assert unanswered is not None and not unanswered[:3].isdigit()  # no HTTP answer at all
    # a worker that is not the pool pod it should be is not sent the session's key
    assert "certificate" in (claim(claim_at, "pool-kriging-ffffffff", body, lss) or "")
    # bad claims are refused with the reason, and it goes on waiting
    for bad, why in (({**body, "session": "../x"}, "session"),
                     ({**body, "args": ["--cert", "/etc/passwd"]}, "--cert is set by the claim"),
                     ({**body, "args": ["--no-such-flag"]}, "not arguments of"),
                     ({**body, "key": "none"}, "key: a PEM private key"),
                     ({**body, "port": 1}, "port: Extra inputs are not permitted"),
                     ({"session": SESSION}, "publish: Field required")):
        refused = claim(claim_at, POOL_POD, bad, lss)
        assert refused is not None and refused.startswith("400") and why in refused, refused
    assert proc.poll() is None

    assert claim(claim_at, POOL_POD, body, lss) is None
    wait_until(lambda: ready_file.exists() or proc.poll() is not None, what="the ready file")
    assert proc.poll() is None, output.read_text()
    wait_until(lambda: serves(health, HOST, lss), what="the session's certificate")
    internal = json.loads(ready_file.read_text())["internal"]

    same = client_context(pki.identity("relay"))  # the session's relay
    other = client_context(pki.identity("kriging", session="0ther", issuer="intermediate"))
    for context in (same, other):
        context.check_hostname = False
    request = urllib.request.Request(f"https://{internal}/execute", data=json.dumps(
        {"action": "interpolate", "params": POINTS}).encode())
    with urllib.request.urlopen(request, context=same, timeout=30) as reply:
        assert json.loads(reply.read())["result"]["estimates"] == [pytest.approx(2.5)]
    with pytest.raises(urllib.error.HTTPError) as refused_peer:
        urllib.request.urlopen(request, context=other, timeout=30)
    assert refused_peer.value.code == 403
    assert "another session" in json.loads(refused_peer.value.read())["error"]["message"]

    second = claim(claim_at, POOL_POD, body, lss)  # its claim listener is closed
    assert second is not None and "Connect" in second

    # Renewal: the LSS writes the session's new certificate into the Secret the pod mounts
    # (here: the pool identity's folder, as tls.crt and tls.key), and the service takes it.
    renewed = issue_identity(pki.dir, "kriging", tmp_path / "renewed", session=SESSION,
                             hosts=[HOST], issuer="intermediate")
    relay = pki.identity("relay")
    first = served_certificate(internal, relay)
    (tmp_path / "tls.key").write_bytes(renewed.key.read_bytes())
    (tmp_path / "tls.crt").write_bytes(renewed.cert.read_bytes())
    wait_until(lambda: served_certificate(internal, relay) != first,
               what="the renewed certificate")
    assert served_certificate(internal, relay) == x509.load_pem_x509_certificate(
        renewed.cert.read_bytes()).public_bytes(Encoding.DER)


def test_a_waiting_worker_stops_cleanly_on_sigterm(worker):
    proc, ready_file, output, *_ = worker
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, output.read_text()
    assert not ready_file.exists()


def test_a_claim_bind_without_a_pool_identity_is_refused(services):
    code, text = services.run_to_exit("kriging", None, "--claim-bind",
                                      f"127.0.0.1:{free_port()}")
    assert code == 10 and "--claim-bind needs --cert, --key and --ca" in text


