"""Checks of caller input, with messages that say what was wrong (never an env value)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_northflank.errors import EmulatorError


def check_argv(argv: Any, what: str) -> list[str]:
    if isinstance(argv, (str, bytes)) or not isinstance(argv, (list, tuple)) or not argv:
        raise EmulatorError(f"{what} must be a non-empty list of strings, got {argv!r}")
    for position, arg in enumerate(argv):
        if not isinstance(arg, str):
            raise EmulatorError(f"{what}[{position}] must be a string, got {type(arg).__name__}")
        if "\0" in arg:
            raise EmulatorError(f"{what}[{position}] contains a NUL character")
    if not argv[0]:
        raise EmulatorError(f"{what}[0] (the program) is empty")
    return list(argv)


def check_env(env: Mapping[str, str] | None, what: str) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise EmulatorError(f"{what} must be a mapping of strings, got {type(env).__name__}")
    checked: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise EmulatorError(f"{what} has an invalid variable name {key!r}")
        if not isinstance(value, str):
            raise EmulatorError(f"{what}[{key!r}] must be a string, got {type(value).__name__}")
        if "\0" in value:
            raise EmulatorError(f"{what}[{key!r}] contains a NUL character")
        checked[key] = value
    return checked


def check_window(rows: Any, columns: Any) -> None:
    for name, value in (("rows", rows), ("columns", columns)):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
            raise EmulatorError(f"tty {name} must be an integer from 1 to 65535, got {value!r}")
