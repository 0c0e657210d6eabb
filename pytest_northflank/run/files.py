"""The run directory: the one place that names its files, and the one locked-JSON helper.

Every process of a run (the controller, xdist workers, the reaper) shares these files. Each is
read and replaced whole under a file lock beside it, so a reader sees an old or a new version,
never half of one.

Run directories are private to the user: they live in ``$XDG_RUNTIME_DIR/pytest-northflank``
when that directory is the user's own, else in ``<temp>/pytest-northflank-<uid>``; both are
made ``0700`` and refused when another user owns them or others may write to them (a planted
ledger line must not be able to steer a cleanup). Files are ``0600``.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

from pytest_northflank.errors import ConfigError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
RUNS_DIR = "pytest-northflank"


class RunDirError(ConfigError):
    """The run directory (or the per-user directory holding it) is not private to this user."""


def _is_own_private_dir(path: Path) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.getuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def runs_root(environ: Mapping[str, str] = os.environ) -> Path:
    """Where this user's run directories live: ``$XDG_RUNTIME_DIR/pytest-northflank`` when
    that runtime directory is this user's own, else ``<temp>/pytest-northflank-<uid>``."""
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and _is_own_private_dir(Path(runtime)):
        return Path(runtime) / RUNS_DIR
    return Path(tempfile.gettempdir()) / f"{RUNS_DIR}-{os.getuid()}"


def private_dir(path: Path) -> Path:
    """Make ``path`` a directory only this user can use (``0700``), creating it and its
    missing parents so; an existing one must be owned by this user and not writable by others
    (and so must the runs directory holding it, for a run directory), else
    :class:`RunDirError` says what is wrong and what to do."""
    in_runs_root = _is_runs_root(path.parent)
    if in_runs_root and os.path.lexists(path.parent):
        _check_private(path.parent)  # before making anything inside it
    missing = []
    current = path
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIR)
        except FileExistsError:
            pass  # another process of the run made it meanwhile: checked below
        except OSError as error:
            raise RunDirError(
                f"cannot create the run directory {directory}: {error.strerror}"
            ) from None
    for directory in (path, path.parent) if in_runs_root else (path,):
        _check_private(directory)
    return path


def _is_runs_root(path: Path) -> bool:
    return path.name == RUNS_DIR or path.name.startswith(f"{RUNS_DIR}-")


def _check_private(path: Path) -> None:
    if not _is_own_private_dir(path):
        try:
            info = os.lstat(path)
            what = (
                "is not a directory"
                if not stat.S_ISDIR(info.st_mode)
                else f"belongs to uid {info.st_uid}, not {os.getuid()}"
                if info.st_uid != os.getuid()
                else f"is writable by others (mode {stat.S_IMODE(info.st_mode):o})"
            )
        except OSError as error:
            what = f"cannot be read ({error.strerror})"
        raise RunDirError(
            f"refusing to use {path}: it {what}. pytest-northflank keeps its run files only "
            "in a directory private to you; remove it, or set XDG_RUNTIME_DIR (or TMPDIR) "
            "to a directory of your own"
        )


def private_file(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND) -> int:
    """Open ``path`` for writing as a ``0600`` file (from its creation); a descriptor."""
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), PRIVATE_FILE)


def file_lock(path: Path) -> FileLock:
    """The lock beside ``path`` (``<path>.lock``), created ``0600``."""
    return FileLock(str(path) + ".lock", mode=PRIVATE_FILE)


def replace_json(path: Path, data: Any, *, mode: int = PRIVATE_FILE) -> None:
    """Write ``data`` to ``path`` atomically: a reader sees the old file or the new one, never
    half of one (a process killed mid-write leaves only its scratch file). ``mode`` applies to
    the new file from its creation, so a file holding a token is never readable by others."""
    private_dir(path.parent)
    scratch = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    scratch.unlink(missing_ok=True)  # never write through a file someone planted there
    descriptor = os.open(
        scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            json.dump(data, stream)
        os.replace(scratch, path)
    except BaseException:
        scratch.unlink(missing_ok=True)  # a full disk leaves no half-written scratch behind
        raise


# Run files found damaged in this process, each reported once: path -> what was wrong.
_DAMAGED: dict[str, str] = {}
_DAMAGED_LOCK = threading.Lock()
_REPORTED: set[str] = set()


def note_damage(path: Path, what: str) -> None:
    """Remember that a run file was damaged (the first report per file counts); the plugin
    prints these in its summary, the reaper in its log."""
    with _DAMAGED_LOCK:
        if str(path) not in _REPORTED:
            _DAMAGED.setdefault(str(path), what)


def take_damage_notes(under: Path | None = None) -> list[str]:
    """The damaged-file notes gathered so far, once each (then forgotten); with ``under``,
    only those of files in that directory (a run's own files)."""
    with _DAMAGED_LOCK:
        taken = {
            path: what
            for path, what in _DAMAGED.items()
            if under is None or Path(path).is_relative_to(under)
        }
        _REPORTED.update(taken)
        for path in taken:
            del _DAMAGED[path]
    return [f"{path}: {what}; worked around it" for path, what in taken.items()]


class JsonFile:
    """One JSON document shared by the processes of a run, under a file lock of its own."""

    def __init__(self, path: Path, *, mode: int = PRIVATE_FILE) -> None:
        self.path = path
        self.mode = mode
        self.lock = file_lock(path)

    def read(self) -> Any:
        """The document, or None when the file is missing or not JSON (reported once, see
        :func:`note_damage`; never trusted blindly: callers check the shape of what they get)."""
        try:
            text = self.path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            note_damage(self.path, f"unreadable ({error})")
            return None
        try:
            return json.loads(text)
        except ValueError:
            note_damage(self.path, "not JSON (damaged, truncated or written to by others)")
            return None

    def replace(self, data: Any) -> None:
        replace_json(self.path, data, mode=self.mode)

    @contextmanager
    def edit(self, empty: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Read, change and write back the document under the lock; a missing or damaged file
        starts from ``empty`` (a copy)."""
        with self.lock:
            data = self.read()
            if not isinstance(data, dict):
                data = dict(empty or {})
            yield data
            self.replace(data)


class RunDir:
    """The files of one run, by name (``<temp>/pytest-northflank/run-<id>/...``)."""

    LEDGER = "ledger.jsonl"
    REAPER_LOG = "reaper.log"
    EMULATOR_INFO = "emulator.json"
    EMULATOR_LOCK = "emulator.lock"
    EMULATOR_LOG = "emulator.log"
    SHARED_SANDBOX = "shared-sandbox.json"
    RATE_LIMIT = "rate-limit.json"
    LISTING = "listing.json"
    #: The pid of the process that made the run directory (the controller, mostly).
    RUN_PID = "run.pid"
    REAPER_PID = "reaper.pid"

    def __init__(self, path: Path) -> None:
        self.path = path

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return self.path.exists()

    def create(self) -> Path:
        """Make the run directory (``0700``, in this user's private runs root); the first
        process to make it writes its pid there (see :mod:`.leftovers`)."""
        private_dir(self.path.parent)
        private_dir(self.path)
        self.write_pid(self.RUN_PID, os.getpid(), replace=False)
        return self.path

    def write_pid(self, name: str, pid: int, *, replace: bool = True) -> None:
        """Write a pid file (``0600``); with ``replace`` False an existing one stays."""
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
        try:
            descriptor = private_file(self.path / name, flags)
        except FileExistsError:
            return
        with os.fdopen(descriptor, "w", encoding="ascii") as stream:
            stream.write(f"{pid}\n")

    @property
    def ledger(self) -> Path:
        return self.path / self.LEDGER

    @property
    def emulator_info(self) -> Path:
        return self.path / self.EMULATOR_INFO

    @property
    def shared_sandbox(self) -> Path:
        return self.path / self.SHARED_SANDBOX

    @property
    def rate_limit(self) -> Path:
        return self.path / self.RATE_LIMIT

    @property
    def listing(self) -> Path:
        return self.path / self.LISTING

    def warm_ahead(self, worker_id: str | None) -> Path:
        """The warm-ahead shelf: one for the run (``None``: workers dealt tests at run time
        share it) or one per process."""
        name = "warm-ahead.json" if worker_id is None else f"warm-ahead-{worker_id}.json"
        return self.path / name
