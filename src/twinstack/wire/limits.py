"""What any request may be, checked before it reaches an action: size, nesting, numbers, text.

Every listener (public, internal, relay) decodes JSON through `decode()`, so no handler ever sees
a body larger than `max_message_bytes`, nesting deeper than `max_json_depth`, a number that is
not a finite double, a lone surrogate or a NUL character. orjson already refuses non-finite
numbers, lone surrogates and nesting beyond 1024 levels; the checks here add the configured
bounds and turn every refusal into a 4xx that names the limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from twinstack.wire.errors import ActionError


@dataclass(frozen=True)
class InputLimits:
    max_bytes: int = 16 * 2**20
    max_depth: int = 32


def too_large(size: int, limit: int, what: str = "the request") -> ActionError:
    return ActionError(413, "too_large",
                       f"{what} is {size:,} bytes, over the {limit:,}-byte limit "
                       "(max_message_bytes); send less data per call")


def _decode_error(exc: orjson.JSONDecodeError) -> ActionError:
    text = str(exc)
    if "depth limit" in text:
        return ActionError(400, "too_deep", "the JSON nests deeper than the limit "
                           "(max_json_depth); flatten the data")
    if "infinity" in text:
        return ActionError(400, "malformed_request",
                           f"a number is too large: numbers must be finite doubles "
                           f"(|x| < 1.8e308): {text}")
    if "surrogate" in text:
        return ActionError(400, "malformed_request",
                           f"strings must be valid Unicode (no lone surrogates): {text}")
    return ActionError(400, "malformed_request", f"not valid JSON: {text}")


def _check_depth(value: Any, max_depth: int) -> None:
    """Walk containers only (numbers and strings cost one type check each)."""
    level: list[Any] = [value]
    for _ in range(max_depth + 1):
        deeper: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                deeper.extend(v for v in item.values() if isinstance(v, list | dict))
            elif isinstance(item, list):
                deeper.extend(v for v in item if isinstance(v, list | dict))
        if not deeper:
            return
        level = deeper
    raise ActionError(400, "too_deep", f"the JSON nests deeper than {max_depth} levels "
                      "(max_json_depth); flatten the data")


_LEADING_ID = re.compile(r'\s*\{\s*"id"\s*:\s*(-?\d{1,18}|"[^"\\]{0,128}")\s*[,}]')


def leading_id(data: bytes | str) -> str | int | None:
    """The `id` a message that cannot be parsed starts with, if any, so that its error reply
    still reaches the call waiting for it (clients write the id first)."""
    text = data[:200].decode("utf-8", "replace") if isinstance(data, bytes) else data[:200]
    match = _LEADING_ID.match(text)
    if match is None:
        return None
    found = match.group(1)
    return found[1:-1] if found.startswith('"') else int(found)


def _size(data: bytes | str, limit: int) -> int:
    """Bytes of `data` as UTF-8, counted only where it could pass `limit` (a hot path)."""
    if isinstance(data, bytes) or 4 * len(data) <= limit:
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


def decode(data: bytes | str, limits: InputLimits) -> Any:
    """Parse one JSON request within `limits`, or raise the 4xx that names the limit hit."""
    size = _size(data, limits.max_bytes)
    if size > limits.max_bytes:
        raise too_large(size, limits.max_bytes)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _decode_error(exc) from exc
    # Fewer openers than the limit cannot nest deeper than it. JSON needs control characters
    # escaped, so a NUL can only arrive as an escape: only then are the strings searched.
    if isinstance(data, str):
        openers, escaped = data.count("[") + data.count("{"), "\\u0000" in data
    else:
        openers, escaped = data.count(b"[") + data.count(b"{"), b"\\u0000" in data
    if openers > limits.max_depth:
        _check_depth(value, limits.max_depth)
    if escaped and _has_nul(value):
        raise ActionError(400, "malformed_request",
                          "strings must not contain NUL characters (\\u0000)")
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def encode(value: Any) -> bytes:
    """JSON bytes of a reply (numpy-free: services hand plain lists and floats)."""
    return orjson.dumps(value)
