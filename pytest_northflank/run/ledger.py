"""The run ledger: one file per run, shared by every process of the run, listing its services.

A service is written down *before* its create request is sent (``intent``), again once the API
has given it an id (``created``) and once more after its deletion (``deleted``), or when the
user asked to keep it (``kept``: no cleanup path deletes it). A create the API answered with an
error that means nothing was made (a 4xx such as a refused plan) is ``refused``: there is
nothing to delete, so no cleanup path looks for it. Whoever cleans
up (the fixture teardown, the xdist controller, the reaper process, ``pytest-northflank reap``)
reads the same file, so a service whose create call was in flight when a process died is still
found, by name. Appends are guarded by a ``filelock`` lock; each line is one JSON object.

The ledger says where to look, never what to delete: a line may be damaged, cut short or
planted, so reading skips (and counts) lines that are not well-formed records, and every
cleanup path checks a service's name and its ownership description before deleting it (see
:mod:`.sweep`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pytest_northflank.run.files import file_lock, note_damage, private_dir, private_file

EntryState = Literal["intent", "created", "kept", "deleted", "refused"]


@dataclass
class LedgerEntry:
    """What the ledger knows of one service, after replaying its lines."""

    name: str
    project_id: str
    worker_id: str
    owner: str
    state: EntryState = "intent"
    service_id: str | None = None
    created_at: float = 0.0
    shared: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        """Still to be deleted by whoever cleans up (kept services are not, and a refused
        create never made one)."""
        return self.state not in ("deleted", "kept", "refused")


class Ledger:
    """Append-only record of the services of one run (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = file_lock(path)
        #: Lines the last :meth:`entries` skipped as not well-formed (damaged or foreign).
        self.skipped_lines = 0

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the ledger lock; also used to create a run-wide shared sandbox exactly once."""
        with self._lock:
            yield

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        private_dir(self.path.parent)
        with self._lock:
            descriptor = private_file(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
            with os.fdopen(descriptor, "a+b") as stream:
                # A writer killed mid-line leaves no newline: start on a fresh line regardless.
                if stream.tell() > 0:
                    stream.seek(-1, os.SEEK_END)
                    if stream.read(1) != b"\n":
                        line = "\n" + line
                stream.write(line.encode("utf-8"))
                stream.flush()
                os.fsync(stream.fileno())

    def record_intent(
        self, *, name: str, project_id: str, worker_id: str, owner: str, shared: bool = False
    ) -> None:
        self._append(
            {
                "op": "intent",
                "name": name,
                "project": project_id,
                "worker": worker_id,
                "owner": owner,
                "shared": shared,
                "at": time.time(),
            }
        )

    def record_created(self, name: str, service_id: str) -> None:
        self._append({"op": "created", "name": name, "id": service_id, "at": time.time()})

    def record_deleted(self, name: str, *, found: bool = True) -> None:
        """The service is gone; ``found`` False: cleanup looked for it and no service had its
        name (its create never arrived, or it was deleted from outside the run)."""
        record: dict[str, Any] = {"op": "deleted", "name": name, "at": time.time()}
        if not found:
            record["found"] = False
        self._append(record)

    def record_refused(self, name: str, reason: str) -> None:
        """The API refused the create with an error that means no service was made."""
        self._append({"op": "refused", "name": name, "reason": reason, "at": time.time()})

    def record_kept(self, name: str) -> None:
        self._append({"op": "kept", "name": name, "at": time.time()})

    def record_handover(self, name: str, *, worker_id: str, owner: str) -> None:
        """Another process of the run took the service over (a sandbox made ahead by one xdist
        worker, used by another): cleanup after a crash now goes by the new owner."""
        self._append(
            {"op": "handover", "name": name, "worker": worker_id, "owner": owner, "at": time.time()}
        )

    def entries(self) -> list[LedgerEntry]:
        """Every service of the run, in creation order, with its latest state. Lines that are
        not well-formed records are skipped and counted in :attr:`skipped_lines` (reported
        once, see :func:`~pytest_northflank.run.files.note_damage`)."""
        self.skipped_lines = 0
        if not self.path.exists():
            return []  # nothing written yet (and no lock file made in a missing directory)
        with self._lock:
            try:
                raw = self.path.read_bytes()
            except FileNotFoundError:
                return []
        entries: dict[str, LedgerEntry] = {}
        skipped = 0
        for line in raw.splitlines():
            if not line.strip():
                continue
            record = _record(line)
            if record is None or not _apply(entries, record):
                skipped += 1  # cut short by a killed writer, damaged, or not ours
        self.skipped_lines = skipped
        if skipped:
            note_damage(self.path, f"{skipped} line(s) skipped as damaged or not well-formed")
        return list(entries.values())

    def alive(self, *, owner: str | None = None, include_shared: bool = True) -> list[LedgerEntry]:
        """Services not yet deleted, optionally only those one process (``owner``) created."""
        return [
            entry
            for entry in self.entries()
            if entry.alive
            and (owner is None or entry.owner == owner)
            and (include_shared or not entry.shared)
        ]


def _record(line: bytes) -> dict[str, Any] | None:
    """One ledger line as a record with a string name and op, or None."""
    try:
        record = json.loads(line.decode("utf-8"))
    except ValueError:  # also UnicodeDecodeError
        return None
    if not isinstance(record, dict):
        return None
    if not isinstance(record.get("name"), str) or not isinstance(record.get("op"), str):
        return None
    return record


def _text(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    return value if isinstance(value, str) else None


def _moment(record: dict[str, Any]) -> float:
    value = record.get("at", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    try:
        moment = float(value)
    except OverflowError:
        return 0.0
    return moment if math.isfinite(moment) else 0.0


def _apply(entries: dict[str, LedgerEntry], record: dict[str, Any]) -> bool:
    """Replay one record onto ``entries``; False when it is not a well-formed one."""
    name, op = record["name"], record["op"]
    if op == "intent":
        project, worker, owner = (_text(record, k) for k in ("project", "worker", "owner"))
        if project is None or worker is None or owner is None:
            return False
        entries[name] = LedgerEntry(
            name=name,
            project_id=project,
            worker_id=worker,
            owner=owner,
            created_at=_moment(record),
            shared=record.get("shared") is True,
        )
        return True
    if name not in entries:
        return False
    entry = entries[name]
    if op == "created":
        service_id = _text(record, "id")
        if not service_id:
            return False
        entry.state, entry.service_id = "created", service_id
    elif op in ("deleted", "kept", "refused"):
        entry.state = op
        for key in ("found", "reason"):
            if key in record:
                entry.extra[key] = record[key]
    elif op == "handover":
        worker, owner = _text(record, "worker"), _text(record, "owner")
        if worker is None or owner is None:
            return False
        entry.worker_id, entry.owner = worker, owner
    else:
        return False
    return True
