"""Every error this package raises derives from :class:`NorthflankError`.

::

    NorthflankError
    ├── ConfigError                  a setting, marker or option has a bad value (names its source)
    │   └── ArgumentError            a method got a bad argument (``lines=0``); also a ValueError
    ├── ApiError                     the API answered with an error status
    │   ├── AuthenticationError      401: token missing or wrong
    │   ├── PermissionDeniedError    403: the token lacks a permission
    │   ├── NotFoundError            404
    │   ├── ConflictError            409: e.g. a service with that name exists
    │   ├── ApiValidationError       400/422: the request body was refused; ``details`` says why
    │   ├── RateLimitedError         429: the hourly quota is spent; ``reset_after`` seconds
    │   └── ServerError              5xx
    ├── TransportError               the API could not be reached, or the connection broke
    │   └── ConnectFailed            no connection was made: the request was never sent
    ├── ExecError                    the exec WebSocket failed (error frame, no completion frame)
    │   └── CommandTimeout           a command outlived its timeout (and was stopped); ``result``
    │                                holds the output it wrote until then
    ├── CommandFailed                ``CommandResult.check()`` on a non-zero exit code
    ├── WaitTimeout                  a wait (line, port, HTTP, probe, ``Process.wait``) ran out
    │                                of time; also the built-in ``TimeoutError``
    ├── ProcessEnded                 a background process ended while something waited on it
    ├── NetworkError                 a port cannot be reached: not declared, no network on this
    │                                backend (the emulator without namespaces), or the tunnel failed
    ├── SandboxDeleted               a call on a sandbox that was deleted (says when, by what)
    ├── FileTransferError            upload/download failed (missing path, no tar, ...)
    │   └── UnsafeArchiveError       an archive tried to write outside its target
    ├── ProvisioningError            a sandbox did not become ready
    │   ├── DeploymentFailed         the deployment status became FAILED
    │   └── ReadyTimeout             not COMPLETED within the ready timeout
    └── EmulatorError                the embedded emulator could not start or run a sandbox
        └── ImageError               an image could not be had (``emulator.images.errors``:
                                     ImageNotFound, RegistryAuthError, RegistryUnreachable,
                                     BadImage)

Messages never contain the API token.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "ApiValidationError",
    "ArgumentError",
    "AuthenticationError",
    "CommandFailed",
    "CommandTimeout",
    "ConfigError",
    "ConflictError",
    "ConnectFailed",
    "DeploymentFailed",
    "EmulatorError",
    "ExecError",
    "FileTransferError",
    "NetworkError",
    "NorthflankError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProcessEnded",
    "ProvisioningError",
    "RateLimitedError",
    "ReadyTimeout",
    "SandboxDeleted",
    "ServerError",
    "TransportError",
    "UnsafeArchiveError",
    "WaitTimeout",
]


class NorthflankError(Exception):
    """Root of every error raised by pytest-northflank."""


class ConfigError(NorthflankError):
    """A setting has a bad value; the message names where it came from."""


class ArgumentError(ConfigError, ValueError):
    """A method was called with an argument it cannot use (``logs(lines=0)``, ``timeout=-1``,
    a NUL character in a command); the message names the argument and the bad value. Raised
    before anything is sent. Also a ``ValueError``, the built-in error for a bad value."""


class ApiError(NorthflankError):
    """The Northflank API answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        method: str = "",
        path: str = "",
        error_id: str | None = None,
        details: Any = None,
    ) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.error_id = error_id
        self.details = details
        self.api_message = message
        where = f" ({method} {path})" if method else ""
        super().__init__(f"{status} {message}{where}")


class AuthenticationError(ApiError):
    """401: the API token is missing, wrong or expired."""


class PermissionDeniedError(ApiError):
    """403: the token lacks a permission; the message names it when the API does."""


class NotFoundError(ApiError):
    """404: the project, service or route does not exist."""


class ConflictError(ApiError):
    """409: the resource already exists (for example a service with that name)."""


class ApiValidationError(ApiError):
    """400 or 422: the API refused the request body; ``details`` holds its reasons."""


class RateLimitedError(ApiError):
    """429: the hourly request quota is spent; ``reset_after`` is seconds until it resets."""

    def __init__(self, message: str, *, reset_after: float | None = None, **kw: Any) -> None:
        self.reset_after = reset_after
        super().__init__(message, **kw)


class ServerError(ApiError):
    """5xx: the API failed on its side."""


class TransportError(NorthflankError):
    """The API could not be reached, timed out, or the connection broke."""


class ConnectFailed(TransportError):
    """No connection to the API could be made: the request was never sent (so a create that
    failed so made nothing)."""


class ExecError(NorthflankError):
    """The exec WebSocket failed: an error frame, a refused init, or no completion frame."""


class CommandTimeout(ExecError):
    """A command outlived its timeout; the remote process was stopped.

    ``timeout`` is the limit in seconds. ``result`` is what the command wrote before it was
    stopped: from ``Sandbox.run`` a ``CommandResult`` whose ``exit_code`` is None (it did not
    finish), from ``NorthflankClient.run`` an ``ExecResult``; None when a streaming session's
    output was already handed out chunk by chunk.
    """

    def __init__(self, message: str, *, timeout: float, result: Any = None) -> None:
        self.timeout = timeout
        self.result = result
        super().__init__(message)


class CommandFailed(NorthflankError):
    """``CommandResult.check()`` found a non-zero exit code; ``result`` is that result."""

    def __init__(self, message: str, *, result: Any = None) -> None:
        self.result = result
        super().__init__(message)


class WaitTimeout(NorthflankError, TimeoutError):
    """A wait ran out of time: ``Process.wait_for_line``, ``Process.wait``,
    ``Sandbox.wait_for_port``, ``Sandbox.wait_for_http`` or a readiness probe. The message
    names what was awaited and shows the last output or status seen. Also a ``TimeoutError``.
    A timed-out wait stops nothing: the process keeps running."""

    def __init__(self, message: str, *, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(message)


class ProcessEnded(NorthflankError):
    """A background process ended while a wait was looking for its output; ``exit_code`` is
    how it ended and the message shows its last output lines."""

    def __init__(self, message: str, *, exit_code: int | None) -> None:
        self.exit_code = exit_code
        super().__init__(message)


class NetworkError(NorthflankError):
    """A sandbox's port or address cannot be reached (see the message for why)."""


class SandboxDeleted(NorthflankError):
    """A command, transfer or log read on a sandbox that was deleted; the message says when
    and by what."""


class FileTransferError(NorthflankError):
    """An upload or download failed; the message names the path and the reason."""


class UnsafeArchiveError(FileTransferError):
    """An archive member would land outside the target (absolute, ``..``, link, device)."""


class ProvisioningError(NorthflankError):
    """A sandbox could not be created or did not become ready."""


class DeploymentFailed(ProvisioningError):
    """The deployment status became FAILED."""


class ReadyTimeout(ProvisioningError):
    """The deployment did not reach COMPLETED within the ready timeout."""


class EmulatorError(NorthflankError):
    """The embedded emulator could not start, or could not run a sandbox."""
