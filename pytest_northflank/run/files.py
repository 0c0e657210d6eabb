"""The run directory: the one place that names its files, and the one locked-JSON helper.

Every process of a run (the controller, xdist workers, the reaper) shares these files. Each is
read and replaced whole under a file lock beside it, so a reader sees an old or a new version,
never half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock


def replace_json(path: Path, data: Any, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically: a reader sees the old file or the new one, never
    half of one (a process killed mid-write leaves only its scratch file). ``mode`` applies to
    the new file from its creation, so a file holding a token is never readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        json.dump(data, stream)
    os.replace(scratch, path)


class JsonFile:
    """One JSON document shared by the processes of a run, under a file lock of its own."""

    def __init__(self, path: Path, *, mode: int = 0o644) -> None:
        self.path = path
        self.mode = mode
        self.lock = FileLock(str(path) + ".lock")

    def read(self) -> Any:
        """The document, or None when the file is missing or not JSON (never trusted blindly:
        callers check the shape of what they get)."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
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

    def __init__(self, path: Path) -> None:
        self.path = path

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return self.path.exists()

    def create(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path

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
