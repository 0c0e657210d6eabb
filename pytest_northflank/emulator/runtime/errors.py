from __future__ import annotations

import errno
import os

from pytest_northflank.errors import EmulatorError


class CommandNotRunnable(EmulatorError, OSError):
    """``argv[0]`` of a sandbox command could not be executed.

    ``exit_code`` is what a shell reports in that case (127 not found, 126 not executable) and
    ``str(error)`` reads like a shell's message, e.g. ``"nosuch: No such file or directory"``.
    """

    exit_code: int = 126

    def __init__(self, command: str, error_number: int) -> None:
        super().__init__(error_number, os.strerror(error_number), command)
        self.command = command

    def __str__(self) -> str:
        return f"{self.command}: {self.strerror}"


class CommandNotFound(CommandNotRunnable, FileNotFoundError):
    """``argv[0]`` does not exist (not a path, and not found on ``PATH``); ``exit_code`` 127."""

    exit_code = 127

    def __init__(self, command: str) -> None:
        super().__init__(command, errno.ENOENT)


class CommandNotExecutable(CommandNotRunnable, PermissionError):
    """``argv[0]`` exists but cannot be executed (permissions, a directory, bad format); 126."""


class LauncherSilent(EmulatorError):
    """A sandbox launcher said nothing within its time: a loaded machine, not a refusal."""
