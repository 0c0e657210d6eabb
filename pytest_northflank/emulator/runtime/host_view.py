"""What of the host a namespace sandbox sees through its overlay of ``/``.

A sandbox should look like a container started from an image: the host's userland (``/usr``,
``/etc``, the ``/lib`` variants, ``/bin``, ``/sbin``, ``/opt``, ``/var``) and nothing of the
host's own business. So every other top-level directory is covered by an empty tmpfs (the
checkout under test wherever CI puts it, ``/home``, ``/root``, ``/tmp``, ``/mnt``, ``/run`` with
its sockets) and every other top-level file is deleted in the overlay. The process's working
directory, the temporary directory and the emulator's state directory are masked too when
they sit inside a kept directory (``/var/lib/ci/workspace/repo``, ``/usr/src/app``). A file of
``/etc`` that is a link into a masked directory (``resolv.conf`` pointing into ``/run`` under
systemd-resolved) is replaced by a copy of what it points to, as container engines do.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass

# The top-level directories of a container image's root filesystem that a sandbox keeps.
IMAGE_ROOT = frozenset(
    {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "opt", "var"}
)
# Mounted fresh inside the sandbox, whatever the host has there.
MOUNTED_FRESH = frozenset({"proc", "dev", "sys"})
# Directories a sandbox cannot work without: masking them (or an ancestor) would break it.
ESSENTIAL = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class HostView:
    """Directories to cover with an empty tmpfs (path, octal mode), files to delete, and
    links to replace by a copy of their target."""

    masked_dirs: tuple[tuple[str, str], ...]
    hidden_files: tuple[str, ...]
    copied_links: tuple[str, ...]


def host_view(*also_private: str, root: str = "/") -> HostView:
    """The masks for the host whose root is ``root``; ``also_private`` are more directories
    to hide when they are not essential (the emulator's state directory, for instance)."""
    masked: list[tuple[str, str]] = []
    hidden: list[str] = []
    with os.scandir(root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name in IMAGE_ROOT or entry.name in MOUNTED_FRESH:
                continue
            if entry.is_symlink():
                continue  # a link into a masked directory shows an empty one
            if entry.is_dir():
                masked.append(("/" + entry.name, _mode(entry.path)))
            else:
                hidden.append("/" + entry.name)
    private = [os.getcwd(), tempfile.gettempdir(), "/var/tmp", *also_private]
    for path in dict.fromkeys(os.path.realpath(p) for p in private):
        if _maskable(path) and not any(_under(path, top) for top, _ in masked):
            masked.append((path, _mode(os.path.join(root, path.lstrip("/")))))
    copied = []
    with os.scandir(os.path.join(root, "etc")) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_symlink() and entry.is_file():  # a link to an existing regular file
                target = "/" + os.path.relpath(os.path.realpath(entry.path), root)
                if any(_under(target, top) for top, _ in masked):
                    copied.append("/etc/" + entry.name)
    return HostView(tuple(masked), tuple(hidden), tuple(copied))


def _mode(path: str) -> str:
    try:
        return format(stat.S_IMODE(os.stat(path).st_mode), "04o")
    except OSError:
        return "0755"


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _maskable(path: str) -> bool:
    """Whether an empty tmpfs over ``path`` leaves the sandbox working: not ``/`` or a
    top-level directory, no ancestor of an essential directory and, inside one, deeper than
    its own subdirectories (``/usr/src/app`` is fine, ``/usr/lib`` or ``/etc/ssl`` are not)."""
    depth = path.count("/")
    if depth < 2 or any(_under(essential, path) for essential in ESSENTIAL):
        return False
    return depth >= 3 or not any(_under(path, essential) for essential in ESSENTIAL)
