"""Blobs reach clients by a plain streaming `GET /blobs/HASH?session=ID` on the relay, with
the session's token: ETag = hash, cached forever, byte ranges; only the project's own blobs,
only for its participants."""

from __future__ import annotations

import hashlib
import ssl
import urllib.error
import urllib.request

import pytest

from tests.model_checks import shared_project
from tests.platform_fixtures import running_platform
from twinstack.client import ActionError
from twinstack.client.client import tls_context


def get(ctx: ssl.SSLContext, url: str, token: str | None, **headers: str
        ) -> tuple[int, dict[str, str], bytes]:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, context=ctx, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_download_by_hash_with_ranges_and_access(tmp_path):
    with running_platform(tmp_path, "ada", "bob", "cy", "dan") as platform:
        ada, _, cy, project = shared_project(platform, "parts")
        session = ada.open_session(project)
        box = session.modeling.create("box", size=[2, 1, 1], name="box")
        digest = session.call("modeling", "export", id=box, format="step")["blob"]
        data = session.blob(digest)
        assert data.startswith(b"ISO-10303-21") and hashlib.sha256(data).hexdigest() == digest
        saved = session.save_blob(digest, tmp_path / "box.step")
        assert saved.read_bytes() == data
        brep = session.model.get(box)["blobs"]["brep"]  # a committed entity's blob
        assert b"CASCADE Topology" in session.blob(brep)

        ctx = tls_context(platform.ca)
        url = f"{ada.info()['relay_url']}/blobs/{digest}?session={session.id}"
        status, headers, body = get(ctx, url, ada.token)
        assert status == 200 and body == data
        assert headers["ETag"] == f'"{digest}"'
        assert "immutable" in headers["Cache-Control"]
        assert headers["Accept-Ranges"] == "bytes"
        status, headers, body = get(ctx, url, ada.token, Range="bytes=10-19")
        assert status == 206 and body == data[10:20]
        assert headers["Content-Range"] == f"bytes 10-19/{len(data)}"
        status, _, body = get(ctx, url, ada.token, Range="bytes=-7")
        assert status == 206 and body == data[-7:]
        status, _, body = get(ctx, url, ada.token, Range=f"bytes={len(data)}-")
        assert status == 416
        status, _, body = get(ctx, url, ada.token, **{"If-None-Match": f'"{digest}"'})
        assert status == 304 and body == b""

        # a viewer of the project reads; others, and callers without a token, do not
        with cy.open_session(project) as viewer:
            assert viewer.blob(digest) == data
        assert get(ctx, url, cy.token)[0] == 200
        dan = platform.client("dan")
        assert get(ctx, url, dan.token)[0] == 404  # no such session, as far as dan knows
        assert get(ctx, url, None)[0] == 401
        bad = f"{ada.info()['relay_url']}/blobs/{digest[:-1]}X?session={session.id}"
        status, _, body = get(ctx, bad, ada.token)
        assert status == 400 and b"sha256" in body

        # a blob of another project is not this project's, even by its exact hash
        other = ada.create_project("elsewhere", "3D simulation")["id"]
        with ada.open_session(other) as elsewhere:
            secret = elsewhere.modeling.create("sphere", radius=3, name="secret")
            hidden = elsewhere.model.get(secret)["blobs"]["brep"]
            assert elsewhere.blob(hidden)
        with pytest.raises(ActionError) as refused:
            session.blob(hidden)
        assert refused.value.status == 404 and "no blob" in refused.value.message
        with pytest.raises(ActionError) as missing:
            session.blob("0" * 64)
        assert missing.value.status == 404
        session.close()
