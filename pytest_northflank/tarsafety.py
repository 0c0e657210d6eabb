"""Tar member checks shared by file copy (``client.tarstream``) and image layers
(``emulator.images.unpack``): a leaf, so neither of those packages imports the other."""

from __future__ import annotations

import os
import stat
import struct
import tarfile

from pytest_northflank.errors import FileTransferError, UnsafeArchiveError

__all__ = ["DAMAGED", "clamp_mtime", "member_parts", "within"]

# Modification times are kept within what a time_t and the filesystems hold: a header (or a
# pax record) may say anything, NaN and 10**400 included.
MTIME_RANGE = (-(2**31), 2**34 - 1)

# What tarfile raises on a malformed header besides TarError: a pax record such as
# "GNU.sparse.map=" or "size=x" reaches int(), and a broken sparse map or base-256 number
# can overflow or run off its end.
DAMAGED = (tarfile.TarError, ValueError, OverflowError, EOFError, IndexError, struct.error)


def member_parts(name: str, what: str = "member") -> list[str]:
    """The path components of an archive name, refusing absolute names and ``..``."""
    if "\x00" in name:
        raise UnsafeArchiveError(f"archive {what} {name!r} contains a NUL byte")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"archive {what} {name!r} has an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"archive {what} {name!r} contains '..' (path traversal)")
    return parts


def within(root: str, path: str) -> bool:
    """Whether ``path`` is ``root`` or below it (both real, absolute paths)."""
    return path == root or path.startswith(root + os.sep)


def clamp_mtime(info: tarfile.TarInfo) -> int:
    """The member's modification time as an int a filesystem can hold (0 for garbage)."""
    try:
        seconds = int(info.mtime)
    except (ValueError, OverflowError, TypeError):  # NaN, infinity, garbage
        return 0
    low, high = MTIME_RANGE
    return min(max(seconds, low), high)


def real_parent(root: str, parts: list[str], name: str) -> str:
    """The real directory under ``root`` that will hold ``parts[-1]`` (member ``name``), made
    if missing. A symlink on the way is refused (writing through a link could leave ``root``),
    and so is a file where a directory should be."""
    current = root
    for part in parts[:-1]:
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeArchiveError(
                f"archive member {name!r} would be written through the symlink "
                f"{os.path.relpath(current, root)!r}"
            )
        if not stat.S_ISDIR(st.st_mode):
            raise FileTransferError(
                f"cannot extract {name!r}: {os.path.relpath(current, root)!r} is not a directory"
            )
    return current
