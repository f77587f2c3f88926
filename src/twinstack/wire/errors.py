"""The error vocabulary of actions: a stable code, a message to act on, the field at fault.

The same shape travels over HTTP, WebSocket, the Python client and the CLI.
"""

from __future__ import annotations

from typing import Any


class ActionError(Exception):
    """`retry_after` (seconds) tells a refused caller when to try again (HTTP Retry-After)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, *,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body

    @classmethod
    def from_json(cls, status: int, body: dict[str, Any]) -> ActionError:
        if not isinstance(body, dict):
            return cls(status, "error", str(body))
        retry = body.get("retry_after")
        return cls(status, str(body.get("code", "error")), str(body.get("message", body)),
                   body.get("field"),
                   retry_after=float(retry) if isinstance(retry, int | float) else None)

    def in_message(self) -> dict[str, Any]:
        """The error inside a message (WebSocket reply, tunnelled call): with its status."""
        return {**self.to_json(), "status": self.status}

    @classmethod
    def from_message(cls, body: dict[str, Any]) -> ActionError:
        return cls.from_json(int(body.get("status", 400)), body)

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.code}: {self.message}{where}"


def malformed(message: str) -> ActionError:
    return ActionError(400, "malformed_request", message)


def unknown_action(name: str, known: list[str]) -> ActionError:
    return ActionError(404, "unknown_action",
                       f"no action {name!r}; this service offers: {', '.join(sorted(known))}",
                       "action")


def forbidden(message: str) -> ActionError:
    return ActionError(403, "forbidden", message)


def unauthorized(message: str) -> ActionError:
    return ActionError(401, "unauthorized", message)


def not_found(kind: str, ident: str) -> ActionError:
    """The one answer for "missing" and "not yours", so ids of others' things stay secret."""
    return ActionError(404, "not_found", f"no {kind} {ident}")


class ServiceUnavailable(ActionError):
    """The peer could not be reached or did not answer; retrying later may work."""

    def __init__(self, message: str) -> None:
        super().__init__(503, "unavailable", message)
