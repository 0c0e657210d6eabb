"""Checks of a caller's arguments, and the argv a command string becomes: shared by the
client's REST calls, exec sessions and one-shot runs. Every refusal is an ``ArgumentError``
that names the argument."""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence

from pytest_northflank.errors import ArgumentError

__all__ = [
    "check_command_text",
    "check_count",
    "check_ids",
    "check_no_nul",
    "check_terminal_size",
    "check_timeout",
    "command_argv",
    "describe_argv",
]

_DESCRIBE_LIMIT = 200
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_timeout(timeout: float | None, name: str = "timeout") -> None:
    """Refuse (``ArgumentError``) a timeout that is not None or a positive, finite number of
    seconds."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ArgumentError(
            f"{name} must be a number of seconds or None, got {type(timeout).__name__} {timeout!r}"
        )
    if math.isnan(timeout) or math.isinf(timeout):
        raise ArgumentError(
            f"{name} must be a finite number of seconds, got {timeout} (None: no limit)"
        )
    if timeout <= 0:
        raise ArgumentError(f"{name} must be positive, got {timeout} (seconds)")


def check_count(name: str, value: int, *, minimum: int) -> None:
    """Refuse (``ArgumentError``) a count that is not a whole number of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(f"{name} must be a whole number, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ArgumentError(f"{name} must be at least {minimum}, got {value}")


def describe_argv(argv: Sequence[str]) -> str:
    """A shell-quoted, length-limited rendering of argv for messages. The values an ``env``
    prefix assigns are shown as ``***`` (``env DB_PASSWORD=*** psql``): they may be secrets."""
    shown = [shlex.quote(arg) for arg in argv]
    if argv and argv[0] == "env":
        for position in range(1, len(argv)):
            name, equals, _ = argv[position].partition("=")
            if argv[position].startswith("-"):
                continue  # an option of env such as -i
            if not (equals and _ENV_ASSIGNMENT.match(name)):
                break  # the program env runs
            shown[position] = f"{name}=***"
    text = " ".join(shown)
    return text if len(text) <= _DESCRIBE_LIMIT else text[:_DESCRIBE_LIMIT] + "..."


def check_command_text(command: str) -> None:
    """Refuse (``ArgumentError``) a command string holding a NUL, saying where."""
    if "\0" in command:
        raise ArgumentError(
            "the command contains a NUL character, which no program can receive "
            f"(at position {command.index(chr(0))})"
        )


def check_no_nul(argv: Sequence[str]) -> None:
    """Refuse (``ArgumentError``) an argv with a NUL in any element, naming the element."""
    for position, arg in enumerate(argv):
        if "\0" in arg:
            name = "the program name" if position == 0 else f"argument {position}"
            raise ArgumentError(
                f"{name} of the command contains a NUL character, which no program can "
                "receive (arguments end at the first NUL)"
            )


def command_argv(command: str | Sequence[str], shell: str | None = None) -> list[str]:
    """The argv that runs ``command``.

    A string runs through ``sh -c`` unless ``shell`` says otherwise: ``shell="none"`` splits it
    shell-style and runs it directly, any other ``shell`` (``"bash -c"``) is split and gets the
    string appended. A sequence is an argv and runs as is (``shell`` must be None or "none").
    """
    if isinstance(command, str):
        if not command.strip():
            raise ArgumentError("command must not be empty")
        check_command_text(command)
        if shell is None:
            return ["sh", "-c", command]
        if shell == "none":
            return shlex.split(command)
        prefix = shlex.split(shell)
        if not prefix:
            raise ArgumentError(f"shell {shell!r} is empty")
        check_no_nul(prefix)
        return [*prefix, command]
    argv = list(command)
    if not argv:
        raise ArgumentError("command argv must not be empty")
    if not all(isinstance(arg, str) for arg in argv):
        raise TypeError(f"command argv must be strings, got {argv!r}")
    if shell not in (None, "none"):
        raise ArgumentError(f"shell={shell!r} applies to a command string, not an argv list")
    check_no_nul(argv)
    return argv


def check_ids(**ids: str) -> None:
    """Refuse (``ArgumentError``) an empty or non-string project or service id, naming it."""
    for name, value in ids.items():
        if not isinstance(value, str) or not value:
            raise ArgumentError(f"{name} must be a non-empty string, got {value!r}")


def check_terminal_size(rows: int, columns: int) -> None:
    """Refuse (``ArgumentError``) a terminal size that is not two whole numbers >= 1."""
    check_count("rows", rows, minimum=1)
    check_count("columns", columns, minimum=1)
