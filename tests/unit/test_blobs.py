"""The content-addressed blob store on a real directory: put/get by sha256, idempotent puts,
streamed puts, bad and missing hashes, corruption detected, no temporary files left."""

from __future__ import annotations

import hashlib
import os

import pytest

from twinstack.store import Invalid, NotFound
from twinstack.store.blobs import BlobStore, CorruptBlob


def test_put_returns_the_sha256_and_get_returns_the_bytes(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    data = os.urandom(100_000)
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.get(digest) == data and store.exists(digest) and store.verify(digest)
    assert b"".join(store.stream(digest)) == data


def test_puts_are_idempotent_and_leave_no_temporary_files(tmp_path):
    store = BlobStore(tmp_path)
    first = store.put(b"mesh")
    mtime = store.path(first).stat().st_mtime_ns
    assert store.put(b"mesh") == first
    assert store.path(first).stat().st_mtime_ns == mtime
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_streamed_put_equals_a_whole_put(tmp_path):
    store = BlobStore(tmp_path)
    chunks = [os.urandom(1 << 16) for _ in range(5)]
    assert store.put(iter(chunks)) == store.put(b"".join(chunks))


def test_a_failing_stream_leaves_nothing_behind(tmp_path):
    store = BlobStore(tmp_path)

    def chunks():
        yield b"half"
        raise OSError("source went away")

    with pytest.raises(OSError):
        store.put(chunks())
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_bad_and_missing_hashes_are_refused(tmp_path):
    store = BlobStore(tmp_path)
    for bad in ("../../etc/passwd", "AB" * 32, "ab" * 31):
        with pytest.raises(Invalid):
            store.get(bad)
    with pytest.raises(NotFound):
        store.get("ab" * 32)
    assert not store.exists("ab" * 32)


def test_a_corrupt_blob_is_detected(tmp_path):
    store = BlobStore(tmp_path)
    digest = store.put(b"triangulation")
    path = store.path(digest)
    path.chmod(0o644)
    path.write_bytes(b"triangulatioN")
    assert not store.verify(digest)
    with pytest.raises(CorruptBlob, match="corrupt"):
        store.get(digest)
