"""Northflank on localhost: the emulator (HTTP + WebSocket API, state, local containers).

``EmulatorServer`` serves the API on a background thread; ``EmulatorControl`` drives its
control plane (reset, state, faults). ``python -m pytest_northflank.emulator`` serves it
from the command line; its ``--info-file`` is read back by :func:`read_info_file` (an
:class:`EmulatorInfo`, standard library only). The server and control names are imported on
first use, so importing the runtime subpackage alone does not load the web stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_northflank.emulator.info_file import EmulatorInfo, read_info_file

if TYPE_CHECKING:
    from pytest_northflank.emulator.control_client import EmulatorControl
    from pytest_northflank.emulator.server import EmulatorServer

__all__ = ["EmulatorControl", "EmulatorInfo", "EmulatorServer", "read_info_file"]


def __getattr__(name: str) -> Any:
    if name == "EmulatorServer":
        from pytest_northflank.emulator.server import EmulatorServer

        return EmulatorServer
    if name == "EmulatorControl":
        from pytest_northflank.emulator.control_client import EmulatorControl

        return EmulatorControl
    raise AttributeError(f"module 'pytest_northflank.emulator' has no attribute {name!r}")
