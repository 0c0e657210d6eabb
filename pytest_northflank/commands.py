"""How a command reaches a sandbox: the argv to exec and the stdin preamble that sets its
environment. Pure functions, tested alone; :class:`~pytest_northflank.sandbox.Sandbox` and
background processes both build their commands here."""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pytest_northflank.client.arguments import check_command_text, check_no_nul, describe_argv
from pytest_northflank.errors import ArgumentError

# run(on_output=...) calls it with ("stdout" or "stderr", text) for each chunk as it arrives.
OutputCallback = Callable[[str, str], object]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# cwd is applied inside the sandbox by a tiny shell program that gets the directory and the
# command as positional arguments, so no quoting of user text is ever needed.
_CD_AND_EXEC = 'cd -- "$1" && shift && exec "$@"'

# env is applied inside the sandbox by a tiny shell program that reads it from stdin before the
# command's own input: one NAME=value line per variable (the value in printf %b octal escapes,
# so any text fits on one line), then an empty line. On a command line the values would show in
# the process list of the host running the sandbox (the emulator's host is the developer's);
# ``read`` takes stdin a byte at a time from a pipe, so the command gets the rest untouched.
_ENV_FROM_STDIN = (
    'while IFS= read -r nf_line && [ -n "$nf_line" ]; do '
    "nf_value=$(printf '%bx' \"${nf_line#*=}\") && "
    'export "${nf_line%%=*}=${nf_value%x}" || exit 126; '
    'done; unset nf_line nf_value; exec "$@"'
)
# Bytes of a value written as themselves; every other byte as \0ooo.
_PLAIN_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.,:/@+-")


def _printf_escaped(value: str) -> str:
    return "".join(
        chr(byte) if byte in _PLAIN_BYTES else f"\\0{byte:03o}" for byte in value.encode("utf-8")
    )


@dataclass(frozen=True)
class CommandPlan:
    """How to run a command in a sandbox: the ``argv`` to exec, and ``stdin``, bytes to write
    to the command's stdin before anything else (the environment, see :func:`build_command`).
    Only for a command without a tty (a tty would echo them)."""

    argv: list[str]
    stdin: bytes = field(default=b"", repr=False)
    #: The command as messages show it: ``env NAME=*** ... <command>`` (values never shown).
    shown: list[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        return describe_argv(self.shown or self.argv)


def build_command(
    command: str | Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> CommandPlan:
    """The argv that runs ``command`` (a string through ``sh -c``, a list as is) with ``cwd``
    applied inside the sandbox, and the stdin preamble that applies ``env`` there. Every user
    value stays one argv element, and no env value is ever on a command line."""
    __tracebackhide__ = True  # its locals hold env values; pytest would print them
    argv = build_argv(command, cwd=cwd)
    if not env:
        return CommandPlan(argv)
    lines = []
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise ArgumentError(f"{name!r} is not an environment variable name")
        if not isinstance(value, str):
            raise TypeError(f"the value of {name} must be a str, got {type(value).__name__}")
        if "\0" in value:
            raise ArgumentError(f"the value of {name} contains a NUL character")
        lines.append(f"{name}={_printf_escaped(value)}\n")
    preamble = ("".join(lines) + "\n").encode("ascii")
    shown = ["env", *(f"{name}=***" for name in env), *argv]
    return CommandPlan(["sh", "-c", _ENV_FROM_STDIN, "sh", *argv], preamble, shown)


def build_argv(
    command: str | Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
) -> list[str]:
    """The argv that runs ``command`` (a string through ``sh -c``, a list as is) with ``cwd``
    applied inside the sandbox. Every user value stays one argv element. (With an
    environment, use :func:`build_command`.)"""
    __tracebackhide__ = True  # a bad command is the caller's line, not ours
    if isinstance(command, (bytes, bytearray)):
        raise TypeError("the command must be a str or a list of str, not bytes")
    if isinstance(command, str):
        check_command_text(command)
        argv = ["sh", "-c", command]
    else:
        for part in command:
            if not isinstance(part, (str, os.PathLike)):
                raise TypeError(f"command items must be str or path-like, got {part!r}")
        argv = [os.fspath(part) for part in command]
        if not argv:
            raise ArgumentError("the command is an empty list")
        check_no_nul(argv)
    if cwd is not None and "\0" in os.fspath(cwd):
        raise ArgumentError("cwd contains a NUL character")
    if cwd is not None:
        argv = ["sh", "-c", _CD_AND_EXEC, "sh", os.fspath(cwd), *argv]
    return argv


def text_chunks(on_output: OutputCallback) -> Callable[[str, bytes], None]:
    """Bytes chunks to text chunks, one incremental decoder per stream (a character split
    across two chunks is decoded whole)."""
    decoders = {
        name: codecs.getincrementaldecoder("utf-8")("replace") for name in ("stdout", "stderr")
    }

    def deliver(stream: str, data: bytes) -> None:
        text = decoders[stream].decode(data)
        if text:
            on_output(stream, text)

    return deliver
