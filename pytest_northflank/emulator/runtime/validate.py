"""Checks of caller input, with messages that say what was wrong (never an env value)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_northflank.errors import EmulatorError

# Directory isolation: absolute paths an argument may name as they are on the host. Programs
# live there (``env A=1 /usr/bin/python3``), and /tmp is the scratch space a shell script
# names in its own text (which cannot be mapped), so both sides must agree on it; "/" alone is
# a working directory. Every other absolute path into one of the host's top-level directories
# (/etc, /srv, /root, ...) is mapped into the sandbox's private root, so a new file there never
# lands on the host's.
HOST_PATHS_KEPT = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/proc/self", "/tmp")
HOST_FILES_KEPT = ("/", "/dev/null", "/dev/zero", "/dev/stdin", "/dev/stdout", "/dev/stderr")
_SHELLS = ("sh", "bash", "dash", "ash", "zsh")


def map_paths_inside(argv: Sequence[str], directory: str, root: str) -> list[str]:
    """``argv`` with every argument that is an absolute path outside ``directory`` (the
    sandbox's own) mapped under ``root`` (``/etc/x`` -> ``<root>/etc/x``), except the program
    paths above. A shell's ``-c`` script is text, not a path: what it does with absolute paths
    cannot be mapped (directory isolation is the weak mode)."""
    inside = os.path.realpath(directory)
    mapped = list(argv)
    script_next = False
    for position, arg in enumerate(argv):
        if script_next or position == 0 or not arg.startswith("/"):
            after_shell = position > 0 and os.path.basename(argv[position - 1]) in _SHELLS
            script_next = arg == "-c" and after_shell
            continue
        path = os.path.normpath(arg)
        if path in HOST_FILES_KEPT or any(
            path == prefix or path.startswith(prefix + "/") for prefix in HOST_PATHS_KEPT
        ):
            continue
        real = os.path.realpath(path)
        if real == inside or real.startswith(inside + os.sep):
            continue
        # Only paths into the host's own top-level directories: "/health" as a URL path, say,
        # is no file of the host's, and mapping it would change what the program is told.
        top = "/" + path.split("/")[1]
        if not os.path.isdir(top):
            continue
        # A trailing "/" can matter to the program (tar, cp): keep it.
        mapped[position] = root + path + ("/" if arg.endswith("/") and path != "/" else "")
    return mapped


def mapped_top_directories() -> list[str]:
    """The host's top-level directories whose paths :func:`map_paths_inside` maps (``etc``,
    ``srv``, ...): the private root has each of them, empty, so ``test -d /etc`` holds inside
    as on any Linux."""
    kept = {prefix.split("/")[1] for prefix in HOST_PATHS_KEPT}
    return sorted(
        name
        for name in os.listdir("/")
        if name not in kept and os.path.isdir("/" + name) and not os.path.islink("/" + name)
    )


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
