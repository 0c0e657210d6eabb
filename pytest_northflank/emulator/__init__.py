"""Northflank on localhost: the emulator (HTTP + WebSocket API, state, local containers).

``EmulatorServer`` serves the API on a background thread; ``EmulatorControl`` drives its
control plane (reset, state, faults). ``python -m pytest_northflank.emulator`` serves it
from the command line. Both names are imported on first use, so importing the runtime
subpackage alone does not load the web stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_northflank.emulator.control_client import EmulatorControl
    from pytest_northflank.emulator.server import EmulatorServer

__all__ = ["EmulatorControl", "EmulatorServer"]


def __getattr__(name: str) -> Any:
    if name == "EmulatorServer":
        from pytest_northflank.emulator.server import EmulatorServer

        return EmulatorServer
    if name == "EmulatorControl":
        from pytest_northflank.emulator.control_client import EmulatorControl

        return EmulatorControl
    raise AttributeError(f"module 'pytest_northflank.emulator' has no attribute {name!r}")
