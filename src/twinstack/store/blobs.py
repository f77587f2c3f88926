"""Content-addressed blobs on a directory: large data (B-rep files, triangulations, meshes,
fields) is stored once by its sha256 and passed around by that hash, never inside JSON.

A put writes a temporary file, fsyncs it, renames it into place and fsyncs the directory, so
after a crash a blob is either whole under its name or absent; a metadata commit that names a
hash is made only after its put returned. Puts are idempotent (same bytes, same name).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from twinstack.store.errors import Invalid, NotFound, StoreError

_HASH = re.compile(r"[0-9a-f]{64}")
_READ = 1 << 20


def is_sha256(digest: object) -> bool:
    return isinstance(digest, str) and _HASH.fullmatch(digest) is not None


class CorruptBlob(StoreError):
    """A stored blob's bytes no longer hash to its name (disk damage or tampering)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """Blobs under `root/<2 hex>/<2 hex>/<sha256>`; temporary files under `root/tmp`."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not is_sha256(digest):
            raise Invalid(f"{digest!r} is not a sha256 hash (64 lower-case hex digits)")
        return self.root / digest[:2] / digest[2:4] / digest

    def put(self, data: bytes | Iterable[bytes]) -> str:
        """Store bytes (or an iterable of chunks, for data larger than memory); return the hash."""
        chunks: Iterable[bytes] = (data,) if isinstance(data, bytes | bytearray) else data
        digest = hashlib.sha256()
        fd, name = tempfile.mkstemp(dir=self._tmp)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            tmp.chmod(0o444)  # a blob never changes once named
            key = digest.hexdigest()
            final = self.path(key)
            if final.exists():  # idempotent: same name, same bytes
                tmp.unlink()
                return key
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
            return key
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def open(self, digest: str) -> BinaryIO:
        """A reader of the blob's bytes, unverified (stream it; `get` checks the hash)."""
        try:
            return self.path(digest).open("rb")
        except FileNotFoundError:
            raise NotFound(f"no blob {digest}") from None

    def stream(self, digest: str) -> Iterator[bytes]:
        with self.open(digest) as f:
            while chunk := f.read(_READ):
                yield chunk

    def get(self, digest: str) -> bytes:
        """The blob's bytes, checked against its hash."""
        with self.open(digest) as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != digest:
            raise CorruptBlob(f"blob {digest} is corrupt: its bytes hash differently")
        return data

    def remember(self, key: str, digest: str) -> None:
        """Note that the output named `key` (a hash of its inputs) is the blob `digest`."""
        path = self._derived(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._tmp)
        with os.fdopen(fd, "w") as out:
            out.write(digest)
        os.replace(name, path)

    def recall(self, key: str) -> str | None:
        """The blob remembered for `key`, if it is still there."""
        try:
            digest = self._derived(key).read_text().strip()
        except FileNotFoundError:
            return None
        return digest if is_sha256(digest) and self.exists(digest) else None

    def _derived(self, key: str) -> Path:
        if not is_sha256(key):
            raise Invalid(f"{key!r} is not a sha256 hash")
        return self.root / "derived" / key[:2] / key

    def verify(self, digest: str) -> bool:
        """Whether the stored bytes still hash to the name (False for a corrupt blob)."""
        h = hashlib.sha256()
        for chunk in self.stream(digest):
            h.update(chunk)
        return h.hexdigest() == digest
