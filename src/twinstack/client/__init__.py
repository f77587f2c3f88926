"""The Python thin client: what users, the CLI and the tests use to drive TwinStack."""

from twinstack.client.client import Client, Session, SessionFailed
from twinstack.client.credentials import Credentials
from twinstack.wire.errors import ActionError, ServiceUnavailable

__all__ = ["ActionError", "Client", "Credentials", "ServiceUnavailable", "Session",
           "SessionFailed"]
