"""Run directories left behind, for ``pytest-northflank reap``: a run's own (``--run``) and
those of runs whose processes are all gone (``--stale``).

A run directory is left behind when its run ended without a clean finish (the reaper keeps
the ledger and its log for a human) or when the whole machine went down. Whether its run is
dead is read from the processes it names (the ledger's owners, the reaper, the run's emulator);
a directory written to in the last :data:`QUIET_FOR` seconds is never called dead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_northflank.run.files import RunDir, runs_root
from pytest_northflank.run.ledger import Ledger
from pytest_northflank.run.reaper import pid_alive

# A directory changed more recently than this may belong to a run still starting.
QUIET_FOR = 600.0
_RUN_DIR_NAME = re.compile(r"^run-([a-z][a-z0-9]*)$")
PID_FILES = (RunDir.RUN_PID, RunDir.REAPER_PID)


@dataclass(frozen=True)
class LeftRun:
    """A run directory of this user's: its run id, whether any process of it still runs, and
    how many services its ledger still lists as alive."""

    run_id: str
    path: Path
    running: bool
    alive_services: int


def _pids(run_dir: Path, ledger: Ledger) -> set[int]:
    pids: set[int] = set()
    for name in PID_FILES:
        try:
            text = (run_dir / name).read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            continue
        if text.isdigit():
            pids.add(int(text))
    try:
        info = json.loads((run_dir / RunDir.EMULATOR_INFO).read_text(encoding="utf-8"))
        if isinstance(info, dict) and isinstance(info.get("pid"), int):
            pids.add(info["pid"])
    except (OSError, ValueError):
        pass
    for entry in ledger.entries():
        _, _, pid = entry.owner.rpartition(":")
        if pid.isdigit():
            pids.add(int(pid))
    return {pid for pid in pids if 0 < pid < 2**22}


def _latest_change(run_dir: Path) -> float:
    """When a file of the run last changed (lock files aside: readers make them, which also
    touches the directory itself); the directory's own time when it holds nothing else."""
    latest = 0.0
    for child in run_dir.iterdir():
        if child.name.endswith(".lock"):
            continue  # made by readers too
        try:
            latest = max(latest, child.lstat().st_mtime)
        except OSError:
            continue
    return latest or run_dir.stat().st_mtime


def inspect(run_dir: Path, *, now: float | None = None) -> LeftRun | None:
    """What is known of one run directory (None: not a run directory)."""
    match = _RUN_DIR_NAME.match(run_dir.name)
    if match is None or not run_dir.is_dir() or run_dir.is_symlink():
        return None
    ledger = Ledger(run_dir / RunDir.LEDGER)
    try:
        # First: reading the ledger below makes its lock file.
        recent = (now or time.time()) - _latest_change(run_dir) < QUIET_FOR
        pids = _pids(run_dir, ledger)
        alive = len(ledger.alive())
    except OSError:
        return LeftRun(match.group(1), run_dir, running=True, alive_services=0)
    running = recent or any(pid != os.getpid() and pid_alive(pid) for pid in pids)
    return LeftRun(match.group(1), run_dir, running=running, alive_services=alive)


def left_runs(root: Path | None = None) -> list[LeftRun]:
    """Every run directory in this user's runs directory."""
    root = runs_root() if root is None else root
    try:
        children = sorted(root.iterdir())
    except OSError:
        return []
    return [found for child in children if (found := inspect(child)) is not None]


def remove(run_dir: Path) -> bool:
    """Remove a run directory; False when it was not there."""
    if not run_dir.exists():
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return not run_dir.exists()
