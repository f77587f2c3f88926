"""Blobs over HTTP: `GET` by hash, streamed, never inside JSON.

A blob never changes once named, so its hash is its ETag and it may be cached forever
(`immutable`); a client resumes or samples a large one with a `Range` request (one range of
bytes; several ranges are answered with the whole blob, as RFC 9110 allows). The model service
serves its project's blobs on its internal channel; the relay passes them on to participants.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from aiohttp import web

CHUNK = 1 << 20
CACHE_FOREVER = "private, max-age=31536000, immutable"
# What passes through the relay, each way.
REQUEST_HEADERS = ("Range", "If-None-Match", "If-Range")
RESPONSE_HEADERS = ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "ETag",
                    "Cache-Control", "Content-Disposition")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) byte a `Range` header asks for, None for the whole blob; ValueError
    when it asks for nothing the blob has (416)."""
    if header is None:
        return None
    found = _RANGE.fullmatch(header.strip())
    if found is None or not any(found.groups()):
        return None  # a form we do not serve (several ranges, other units): the whole blob
    first, last = found.groups()
    if not first:  # the last N bytes
        n = int(last)
        if n == 0:
            raise ValueError("an empty suffix range")
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise ValueError(f"bytes {header} lie outside the blob's {size} bytes")
    return start, end


def _read(path: Path, start: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(start)
        return f.read(length)


async def blob_response(request: web.Request, path: Path, digest: str,
                        content_type: str = "application/octet-stream") -> web.StreamResponse:
    """The blob at `path` (named `digest`) as the request asks for it: 200, 206, 304 or 416."""
    etag = f'"{digest}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_FOREVER, "Accept-Ranges": "bytes"}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    size = path.stat().st_size
    if_range = request.headers.get("If-Range")
    try:
        wanted = byte_range(request.headers.get("Range") if if_range in (None, etag) else None,
                            size)
    except ValueError as exc:
        return web.Response(status=416, text=f"{exc}\n",
                            headers={**headers, "Content-Range": f"bytes */{size}"})
    start, end = wanted if wanted is not None else (0, size - 1)
    response = web.StreamResponse(status=206 if wanted is not None else 200, headers=headers)
    response.content_type = content_type
    response.content_length = end - start + 1 if size else 0
    if wanted is not None:
        response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    await response.prepare(request)
    position = start
    while position <= end:
        chunk = await asyncio.to_thread(_read, path, position, min(CHUNK, end - position + 1))
        if not chunk:
            break
        await response.write(chunk)
        position += len(chunk)
    await response.write_eof()
    return response
