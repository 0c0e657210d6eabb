"""The runtime's state directories, and reclaiming those of emulators that are gone.

A runtime without a given ``state_dir`` makes ``<tmp>/pytest-northflank-sandboxes-XXXX``
and removes it on shutdown (also on SIGTERM, which the emulator's command turns into a
shutdown). A SIGKILLed emulator cannot, so every directory it makes (its state directory and
each sandbox directory in it) holds an owner file naming it (``owners``); the next runtime
removes directories whose owner is gone: in the temporary directory, and in a ``state_dir``
it is given. Only directories of this user are touched, never through a symlink.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from pytest_northflank.emulator.runtime.owners import owner_gone, owner_name

STATE_DIR_PREFIX = "pytest-northflank-sandboxes-"
OWNER_FILE = ".pytest-northflank-owner"


def make_state_dir() -> Path:
    """A new private state directory in the temporary directory, after reclaiming stale
    ones there."""
    reclaim_stale(Path(tempfile.gettempdir()), prefix=STATE_DIR_PREFIX)
    directory = Path(tempfile.mkdtemp(prefix=STATE_DIR_PREFIX))
    mark_owner(directory)
    return directory


def mark_owner(directory: Path) -> None:
    """Name this process as the owner of ``directory`` (created by it)."""
    fd = os.open(directory / OWNER_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as owner:
        owner.write(owner_name())


def reclaim_stale(parent: Path, prefix: str = "") -> list[Path]:
    """Remove the directories in ``parent`` (named ``prefix...``) whose owner is gone;
    returns them. Best effort: what cannot be read or removed is left alone."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix) or not _stale(Path(entry.path)):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.lexists(entry.path):
            removed.append(Path(entry.path))
    return removed


def _stale(directory: Path) -> bool:
    try:
        info = directory.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return False
        owner_file = directory / OWNER_FILE
        if owner_file.is_symlink():
            return False
        owner = owner_file.read_text(errors="replace")[:64].strip()
    except OSError:
        return False
    return owner_gone(owner)
