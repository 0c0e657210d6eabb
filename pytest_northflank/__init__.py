"""pytest-northflank: real, remote Linux sandboxes for pytest.

Importing this package is cheap: ``Sandbox`` and ``CommandResult`` are imported on first use,
so ``pytest`` runs that never ask for a sandbox pay nothing for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_northflank._version import __version__
from pytest_northflank.errors import (
    ApiError,
    ApiValidationError,
    ArgumentError,
    AuthenticationError,
    CommandFailed,
    CommandTimeout,
    ConfigError,
    ConflictError,
    ConnectFailed,
    DeploymentFailed,
    EmulatorError,
    ExecError,
    FileTransferError,
    NetworkError,
    NorthflankError,
    NotFoundError,
    PermissionDeniedError,
    ProcessEnded,
    ProvisioningError,
    RateLimitedError,
    ReadyTimeout,
    SandboxDeleted,
    ServerError,
    TransportError,
    UnsafeArchiveError,
    WaitTimeout,
)

if TYPE_CHECKING:
    from pytest_northflank import probe
    from pytest_northflank.process import Process
    from pytest_northflank.sandbox import CommandResult, Sandbox

__all__ = [
    "ApiError",
    "ApiValidationError",
    "ArgumentError",
    "AuthenticationError",
    "CommandFailed",
    "CommandResult",
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
    "Process",
    "ProcessEnded",
    "ProvisioningError",
    "RateLimitedError",
    "ReadyTimeout",
    "Sandbox",
    "SandboxDeleted",
    "ServerError",
    "TransportError",
    "UnsafeArchiveError",
    "WaitTimeout",
    "__version__",
    "probe",
]


def __getattr__(name: str) -> Any:
    if name in ("Sandbox", "CommandResult"):
        from pytest_northflank import sandbox

        return getattr(sandbox, name)
    if name == "Process":
        from pytest_northflank.process import Process

        return Process
    if name == "probe":
        import importlib

        return importlib.import_module("pytest_northflank.probe")
    raise AttributeError(f"module 'pytest_northflank' has no attribute {name!r}")
