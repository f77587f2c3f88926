"""The Python thin client: what users, the CLI and the tests use to drive TwinStack."""

from twinstack.client.client import Client, Session, SessionFailed
from twinstack.wire.errors import ActionError

__all__ = ["ActionError", "Client", "Session", "SessionFailed"]
