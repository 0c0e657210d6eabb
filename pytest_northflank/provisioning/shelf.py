"""Warm-ahead's shelf: one JSON file in the run directory, under a file lock, recording what is
being made ahead, what waits for a test, and which tests asked (see :mod:`.warm_ahead`)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_northflank.run.files import JsonFile, RunDirError, note_damage
from pytest_northflank.run.reaper import pid_alive

_ITEM_TYPES: dict[str, type | tuple[type, ...]] = {
    "key": str,
    "name": str,
    "service_id": str,
    "owner": str,
    "made_at": (int, float),
    "ready": bool,
}
_MAKING_TYPES: dict[str, type | tuple[type, ...]] = {"key": str, "name": str, "owner": str}


def _well_formed(entry: object, types: dict[str, type | tuple[type, ...]]) -> bool:
    return (
        isinstance(entry, dict)
        and set(entry) == set(types)
        and all(isinstance(entry[k], t) for k, t in types.items())
        and (types is not _ITEM_TYPES or not isinstance(entry["made_at"], bool))
    )


@dataclass(frozen=True)
class ShelfItem:
    """A sandbox made ahead and not taken yet; ``made_at`` is epoch seconds."""

    key: str
    name: str
    service_id: str
    owner: str
    made_at: float
    ready: bool


@dataclass(frozen=True)
class Claim:
    """What a test got from the shelf: a sandbox made ahead, or the name of one this process
    is still creating (``promised``), or neither; ``pending_elsewhere`` lists the processes
    (owners) still creating one of that spec."""

    item: ShelfItem | None = None
    promised: str | None = None
    pending_elsewhere: tuple[str, ...] = ()


class Shelf:
    """Warm-ahead's record, in one JSON file under a file lock (see the module docstring).

    ``asked``: per spec key, the planned tests that asked for a sandbox; ``making``: creates in
    flight (key, name, owner); ``shelf``: sandboxes made ahead, waiting for a test; ``open``:
    the processes using the shelf; ``refused``: spec keys the API refuses, made ahead by none.
    """

    def __init__(self, path: Path, *, accept_name: Callable[[str], bool] = lambda _: True) -> None:
        self.path = path
        self._file = JsonFile(path)
        #: Which service names may be on the shelf (this run's): others are dropped on read.
        self._accept_name = accept_name
        # Once the file cannot be used (a full disk, a removed run directory), this process
        # goes on with the shelf in memory: warm-ahead keeps working, unshared.
        self._memory: dict[str, Any] | None = None
        self._memory_lock = threading.Lock()

    def _lose_file(self, error: Exception, data: dict[str, Any]) -> None:
        if self._memory is None:
            self._memory = data
            note_damage(self.path, f"cannot be used ({error}); warm-ahead goes on in memory")

    @contextmanager
    def _edit(self) -> Iterator[dict[str, Any]]:
        if self._memory is None:
            try:
                self._file.lock.acquire()
            except (OSError, RunDirError) as error:
                self._lose_file(error, {})
        if self._memory is not None:
            with self._memory_lock:
                self._clean(self._memory)
                yield self._memory
            return
        try:
            data = self._file.read()
            data = data if isinstance(data, dict) else {}
            self._clean(data)
            yield data
            try:
                self._file.replace(data)
            except (OSError, RunDirError) as error:
                self._lose_file(error, data)
        finally:
            self._file.lock.release()

    def _clean(self, data: dict[str, Any]) -> None:
        """Keep only well-formed parts of the file (it may be damaged, or written to by
        someone else); what was dropped is reported once."""
        dropped = 0
        asked = data.get("asked")
        if not isinstance(asked, dict):
            dropped += asked is not None
            asked = {}
        clean_asked = {
            k: v
            for k, v in asked.items()
            if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        }
        dropped += len(asked) - len(clean_asked)
        data["asked"] = clean_asked
        for field_name, types in (("making", _MAKING_TYPES), ("shelf", _ITEM_TYPES)):
            entries = data.get(field_name)
            if not isinstance(entries, list):
                dropped += entries is not None
                entries = []
            kept = [e for e in entries if _well_formed(e, types) and self._accept_name(e["name"])]
            dropped += len(entries) - len(kept)
            data[field_name] = kept
        for field_name in ("open", "refused"):
            values = data.get(field_name)
            if not isinstance(values, list):
                dropped += values is not None
                values = []
            kept_values = [v for v in values if isinstance(v, str)]
            dropped += len(values) - len(kept_values)
            data[field_name] = kept_values
        if dropped:
            note_damage(self.path, f"{dropped} malformed or foreign part(s) dropped")

    def claim(self, key: str, *, owner: str, count: bool = True) -> Claim:
        """A planned test asks for a sandbox of spec ``key``: count it (unless this is a retry),
        and hand it the best matching sandbox on the shelf (ready first, then this process's
        own, then the oldest)."""
        with self._edit() as data:
            if count:
                data["asked"][key] = data["asked"].get(key, 0) + 1
            matching = [entry for entry in data["shelf"] if entry["key"] == key]
            if matching:
                best = min(
                    matching,
                    key=lambda e: (not e["ready"], e["owner"] != owner, e["made_at"]),
                )
                data["shelf"].remove(best)
                return Claim(item=ShelfItem(**best))
            mine = next(
                (e for e in data["making"] if e["key"] == key and e["owner"] == owner), None
            )
            if mine is not None:
                data["making"].remove(mine)
                return Claim(promised=mine["name"])
            others = tuple(e["owner"] for e in data["making"] if e["key"] == key)
            return Claim(pending_elsewhere=others)

    def reserve(
        self,
        demand: Sequence[str],
        *,
        owner: str,
        depth: int,
        skip: set[str],
        name_for: Callable[[str], str],
    ) -> list[tuple[str, str]]:
        """Choose the next sandboxes for this process to make ahead: the first tests of
        ``demand`` (spec keys in run order) not yet covered by a test that asked, a create in
        flight or the shelf, while this process has fewer than ``depth`` ahead, leaving out
        the specs in ``skip`` and those marked refused. Returns (key, name) pairs, now counted
        as in flight."""
        with self._edit() as data:
            skip = skip | set(data["refused"])
            covered: Counter[str] = Counter(data["asked"])
            covered.update(entry["key"] for entry in data["making"])
            covered.update(entry["key"] for entry in data["shelf"])
            own = sum(e["owner"] == owner for e in [*data["making"], *data["shelf"]])
            room = depth - own
            chosen: list[tuple[str, str]] = []
            for key in demand:
                if room <= 0:
                    break
                if covered[key] > 0:
                    covered[key] -= 1
                    continue
                if key in skip:
                    continue
                name = name_for(key)
                data["making"].append({"key": key, "name": name, "owner": owner})
                chosen.append((key, name))
                room -= 1
            return chosen

    def shelve(self, item: ShelfItem) -> bool:
        """Put a finished create on the shelf; False when a test of its maker was promised it."""
        with self._edit() as data:
            making = next((e for e in data["making"] if e["name"] == item.name), None)
            if making is None:
                return False
            data["making"].remove(making)
            data["shelf"].append(item.__dict__.copy())
            return True

    def mark_refused(self, key: str) -> None:
        """The API refuses sandboxes of spec ``key``: no process makes more of them ahead."""
        with self._edit() as data:
            if key not in data["refused"]:
                data["refused"].append(key)

    def abandon(self, name: str) -> None:
        """A create in flight that will not reach the shelf (it failed, or the run ends)."""
        with self._edit() as data:
            data["making"] = [e for e in data["making"] if e["name"] != name]

    def mark_ready(self, name: str) -> None:
        with self._edit() as data:
            for entry in data["shelf"]:
                if entry["name"] == name:
                    entry["ready"] = True

    def join(self, owner: str) -> None:
        """A process starts using the shelf."""
        with self._edit() as data:
            if owner not in data["open"]:
                data["open"].append(owner)

    def leave(self, owner: str, demand: Counter[str]) -> list[ShelfItem]:
        """A process ends its session: the sandboxes to delete now. Its own ones stay on the
        shelf while other processes still run tests that may take them (``demand``: every
        planned test's spec key, run-wide); the last process to leave takes everything left."""
        with self._edit() as data:
            data["open"] = [o for o in data["open"] if o != owner and owner_alive(o)]
            data["making"] = [entry for entry in data["making"] if entry["owner"] != owner]
            if not data["open"]:
                left, data["shelf"] = data["shelf"], []
                return [ShelfItem(**entry) for entry in left]
            # Tests still to ask, less what the other processes are making or hold for them.
            still: Counter[str] = Counter(
                {key: count - data["asked"].get(key, 0) for key, count in demand.items()}
            )
            still.subtract(entry["key"] for entry in data["making"])
            still.subtract(entry["key"] for entry in data["shelf"] if entry["owner"] != owner)
            surplus = []
            for entry in [e for e in data["shelf"] if e["owner"] == owner]:
                if still[entry["key"]] > 0:
                    still[entry["key"]] -= 1
                else:
                    surplus.append(entry)
                    data["shelf"].remove(entry)
            return [ShelfItem(**entry) for entry in surplus]


def owner_alive(owner: str) -> bool:
    """Whether the process behind a ledger owner (``<worker>:<pid>``) still runs."""
    _, _, pid = owner.rpartition(":")
    return pid_alive(int(pid)) if pid.isdigit() else True
