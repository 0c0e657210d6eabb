"""The run ledger: one file per run, shared by every process of the run, listing its services.

A service is written down *before* its create request is sent (``intent``), again once the API
has given it an id (``created``) and once more after its deletion (``deleted``), or when the
user asked to keep it (``kept``: no cleanup path deletes it). A create the API answered with an
error that means nothing was made (a 4xx such as a refused plan) is ``refused``: there is
nothing to delete, so no cleanup path looks for it. Whoever cleans
up (the fixture teardown, the xdist controller, the reaper process, ``pytest-northflank reap``)
reads the same file, so a service whose create call was in flight when a process died is still
found, by name. Appends are guarded by a ``filelock`` lock; each line is one JSON object.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

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
        self._lock = FileLock(str(path) + ".lock")

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the ledger lock; also used to create a run-wide shared sandbox exactly once."""
        with self._lock:
            yield

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a+b") as stream:
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
        """Every service of the run, in creation order, with its latest state."""
        with self._lock:
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                return []
        entries: dict[str, LedgerEntry] = {}
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a killed process: the lines before it still count
            name = record.get("name")
            if not isinstance(name, str):
                continue
            op = record.get("op")
            if op == "intent":
                entries[name] = LedgerEntry(
                    name=name,
                    project_id=str(record.get("project", "")),
                    worker_id=str(record.get("worker", "")),
                    owner=str(record.get("owner", "")),
                    created_at=float(record.get("at", 0.0)),
                    shared=bool(record.get("shared", False)),
                )
            elif name in entries and op == "created":
                entries[name].state = "created"
                entries[name].service_id = str(record.get("id"))
            elif name in entries and op in ("deleted", "kept", "refused"):
                entries[name].state = op
                for key in ("found", "reason"):
                    if key in record:
                        entries[name].extra[key] = record[key]
            elif name in entries and op == "handover":
                entries[name].worker_id = str(record.get("worker", ""))
                entries[name].owner = str(record.get("owner", ""))
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
