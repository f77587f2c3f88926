"""Process exit codes: distinct, so a supervisor (LSS, Kubernetes) can tell why a service stopped.

| code | name                   | meaning                                                          |
|------|------------------------|------------------------------------------------------------------|
| 0    | OK                     | clean stop (SIGTERM / SIGINT), or a command that succeeded       |
| 1    | INTERNAL_ERROR         | an unexpected error stopped the service; see its last log record |
| 2    | USAGE                  | the command line is wrong (unknown flag, missing argument)       |
| 10   | CONFIG_ERROR           | a setting is invalid (flag, TWINSTACK_* variable or config file) |
| 11   | CERTIFICATE_ERROR      | a certificate, key or CA file is missing, unreadable or invalid  |
| 12   | PORT_IN_USE            | an address the service must bind is already taken               |
| 13   | DEPENDENCY_UNREACHABLE | a service this one requires did not answer in time               |
| 14   | ALREADY_RUNNING        | `twinstack up`: a platform already runs on this data directory   |
"""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL_ERROR = 1
    USAGE = 2
    CONFIG_ERROR = 10
    CERTIFICATE_ERROR = 11
    PORT_IN_USE = 12
    DEPENDENCY_UNREACHABLE = 13
    ALREADY_RUNNING = 14


class FatalError(Exception):
    """An error that ends the process with a specific exit code and a message for the operator."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
