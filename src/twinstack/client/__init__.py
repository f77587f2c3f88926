"""The Python thin client: what users, the CLI and the tests use to drive TwinStack."""

from twinstack.client.client import (
    CallTimeout,
    Client,
    ConnectionDropped,
    Session,
    SessionFailed,
)
from twinstack.client.credentials import Credentials
from twinstack.wire.errors import ActionError, ServiceUnavailable

__all__ = ["ActionError", "CallTimeout", "Client", "ConnectionDropped", "Credentials",
           "ServiceUnavailable", "Session", "SessionFailed"]
