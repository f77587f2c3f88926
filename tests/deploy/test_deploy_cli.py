"""`twinstack deploy`: certificates, Secrets and rendered manifests fit together."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml
from cryptography import x509


def twinstack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "twinstack", "deploy", *args], text=True,
                          capture_output=True, timeout=120)


def test_certs_secrets_and_render_match(tmp_path):
    pki = tmp_path / "pki"
    made = twinstack("certs", "--pki", str(pki), "--namespace", "sims",
                     "--public-host", "twinstack.example.org")
    assert made.returncode == 0, made.stderr
    chain = x509.load_pem_x509_certificates((pki / "gss-chain.pem").read_bytes())
    names = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"gss", "gss.sims.svc", "gss.sims.svc.cluster.local", "twinstack.example.org"} <= \
        set(names.get_values_for_type(x509.DNSName))

    listed = twinstack("secrets", "--pki", str(pki), "--namespace", "sims")
    assert listed.returncode == 0, listed.stderr
    secrets = json.loads(listed.stdout)["items"]
    for secret in secrets:
        kubernetes_validate.validate(secret, "1.35.0", strict=True)

    rendered = twinstack("render", "dev", "--namespace", "sims", "--image-tag", "9.9.9",
                         "--registry", "registry.example.org/ts")
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    mounted = {v["secret"]["secretName"] for d in docs if d["kind"] == "Deployment"
               for v in d["spec"]["template"]["spec"].get("volumes", []) if "secret" in v}
    generated = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    assert mounted - generated == {s["metadata"]["name"] for s in secrets}
    images = {c["image"] for d in docs if d["kind"] == "Deployment"
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert "registry.example.org/ts/twinstack-core:9.9.9" in images
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == \
        {"sims"}


def test_render_names_the_overlays_it_knows():
    bad = twinstack("render", "staging")
    assert bad.returncode == 10 and "known: dev, gpu, production" in bad.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another uid needs root")
def test_certs_with_an_owner_give_the_containers_uid_what_it_mounts_and_no_more(tmp_path):
    """Each service reads its own key, the LSS the intermediate CA's; the root CA's key stays
    the deployer's (it signs nothing at run time)."""
    pki = tmp_path / "pki"
    made = twinstack("certs", "--pki", str(pki), "--owner", "4242")
    assert made.returncode == 0, made.stderr
    owned = {p.name for p in pki.iterdir() if p.stat().st_uid == 4242}
    assert {"gss-key.pem", "lss-key.pem", "intermediate-key.pem", "intermediate.pem"} <= owned
    assert "ca-key.pem" not in owned
