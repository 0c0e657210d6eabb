"""Memory and process-count limits for each sandbox.

A sandbox gets its plan's memory (``nf-compute-20``: 512 MiB, as on Northflank) and a
process count (1024 unless the runtime is told otherwise). Where this process may create
cgroups they enforce both: one cgroup per sandbox under ``pytest-northflank/<owner>/<runtime>/``
in the
memory and pids hierarchies (cgroup v1) or in the unified hierarchy (v2); every launcher of
the sandbox (its main process and each exec) joins it before it forks, so all the sandbox
starts is counted and a fork bomb stops at the limit. Otherwise each sandbox process gets
rlimits, which are weaker, as :attr:`LimitEnforcer.reason` says: ``RLIMIT_AS`` caps each
process's address space (not the sandbox's total), and ``RLIMIT_NPROC`` counts every process
of the user and does not bind root.

``<owner>`` names the emulator's process (``owners``): cgroups of an emulator that was
SIGKILLed are removed by the next one. ``<runtime>`` is random: one process may run several
runtimes, and each removes only its own cgroups.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pytest_northflank.emulator.runtime.owners import OWNER_RE, owner_gone, owner_name
from pytest_northflank.errors import EmulatorError

#: RAM of each Northflank deployment plan, in MiB (northflank.com, "Compute Plans and Quota").
PLAN_MEMORY_MB = {
    "nf-compute-10": 256, "nf-compute-20": 512, "nf-compute-50": 1024,
    "nf-compute-100-1": 1024, "nf-compute-100-2": 2048, "nf-compute-100-4": 4096,
    "nf-compute-200": 4096, "nf-compute-200-4": 4096, "nf-compute-200-8": 8192,
    "nf-compute-200-16": 16384, "nf-compute-400": 8192, "nf-compute-400-16": 16384,
    "nf-compute-800-8": 8192, "nf-compute-800-16": 16384, "nf-compute-800-24": 24576,
    "nf-compute-800-32": 32768, "nf-compute-800-40": 40960,
}  # fmt: skip
DEFAULT_MAX_PROCESSES = 1024
GROUP_ROOT = "pytest-northflank"
RELEASE_TIMEOUT = 5.0

_owner_lock = threading.Lock()

LimitSetting = Literal["auto", "cgroup", "rlimit"]
Mechanism = Literal["cgroup v1", "cgroup v2", "rlimit"]


@dataclass(frozen=True)
class SandboxLimits:
    """What one sandbox may use: memory in MiB and a number of processes (None: no limit)."""

    memory_mb: int | None = None
    max_processes: int | None = DEFAULT_MAX_PROCESSES

    def __post_init__(self) -> None:
        for name in ("memory_mb", "max_processes"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise EmulatorError(f"{name} must be a positive integer or None, got {value!r}")


class SandboxGroup:
    """One sandbox's cgroups (one per hierarchy, or one in v2)."""

    def __init__(self, directories: list[Path]) -> None:
        self.directories = directories

    @property
    def procs_files(self) -> list[str]:
        """Where a launcher writes its pid to join the sandbox's cgroups."""
        return [str(directory / "cgroup.procs") for directory in self.directories]

    def release(self, timeout: float = RELEASE_TIMEOUT) -> None:
        """Kill whatever is still in the cgroups, then remove them."""
        deadline = time.monotonic() + timeout
        for directory in self.directories:
            _remove_group(directory, deadline)


class LimitEnforcer:
    """Applies :class:`SandboxLimits` to sandboxes; chooses cgroups when it can create them.

    ``setting``: ``"auto"`` (cgroups, else rlimits), ``"cgroup"`` (refuse without them) or
    ``"rlimit"``. :attr:`mechanism` and :attr:`reason` say what was chosen and what it means.
    """

    def __init__(self, setting: LimitSetting = "auto") -> None:
        if setting not in get_args(LimitSetting):
            raise EmulatorError(f"limits must be 'auto', 'cgroup' or 'rlimit', got {setting!r}")
        self.mechanism: Mechanism = "rlimit"
        #: ``<hierarchy>/pytest-northflank`` of each hierarchy used (none for rlimits)
        self.bases: list[Path] = []
        self._runtime_dirs: list[Path] = []
        why_not = "rlimits were requested"
        if setting != "rlimit":
            why_not = self._set_up_cgroups()
        if self.mechanism == "rlimit":
            if setting == "cgroup":
                raise EmulatorError(f"cgroup limits are not available here: {why_not}")
            self.reason = (
                f"rlimits ({why_not}): memory is capped per process (RLIMIT_AS), not per "
                "sandbox; the process count (RLIMIT_NPROC) counts all of the user's processes "
                "and does not bind root"
            )
        else:
            self.reason = f"{self.mechanism}: memory and process count per sandbox"

    def _set_up_cgroups(self) -> str:
        """Find writable hierarchies and make this owner's directories; say why not if none."""
        mounts = _cgroup_mounts()
        unified = [m for m in mounts.get("cgroup2", []) if _v2_controllers(m) >= {"memory", "pids"}]
        mechanism: Mechanism
        if unified:
            mechanism, roots = "cgroup v2", unified[:1]
        elif "memory" in mounts and "pids" in mounts:
            # One directory per hierarchy; both controllers may share one.
            mechanism, roots = (
                "cgroup v1",
                list(dict.fromkeys([mounts["memory"][0], mounts["pids"][0]])),
            )
        else:
            return "no cgroup hierarchy with the memory and pids controllers is mounted"
        owner, runtime = owner_name(), secrets.token_hex(4)
        made: list[Path] = []
        try:
            with _owner_lock:  # the owner directory is shared by this process's runtimes
                for root in roots:
                    base = root / GROUP_ROOT
                    chain = [base, base / owner, base / owner / runtime]
                    for depth, directory in enumerate(chain):
                        if mechanism == "cgroup v2":  # a cgroup's children get what it enables
                            _enable_controllers(directory.parent)
                        directory.mkdir(exist_ok=depth < 2)
                        if depth == 0:
                            reclaim_stale_groups(base)
                    made.append(chain[-1])
                    if mechanism == "cgroup v2":
                        _enable_controllers(chain[-1])
        except OSError as exc:
            self._remove_own(made)
            return f"cannot create cgroups: {exc}"
        self.mechanism, self._runtime_dirs = mechanism, made
        self.bases = [directory.parent.parent for directory in made]
        return ""

    def prepare(
        self, name: str, limits: SandboxLimits
    ) -> tuple[dict[str, Any], SandboxGroup | None]:
        """The launcher spec entries for a new sandbox ``name``, and its cgroups if any.

        ``name`` must be unique among this enforcer's live sandboxes.
        """
        if self.mechanism == "rlimit":
            rlimits = []
            if limits.memory_mb is not None:
                rlimits.append(["AS", limits.memory_mb << 20])
            if limits.max_processes is not None:
                rlimits.append(["NPROC", limits.max_processes])
            return {"rlimits": rlimits}, None
        directories = []
        try:
            for runtime_dir in self._runtime_dirs:
                directory = runtime_dir / name
                directory.mkdir()
                directories.append(directory)
                self._write_limits(directory, limits)
        except OSError as exc:
            SandboxGroup(directories).release()
            raise EmulatorError(f"cannot set the limits of sandbox {name!r}: {exc}") from exc
        group = SandboxGroup(directories)
        return {"cgroup_procs": group.procs_files}, group

    def _write_limits(self, directory: Path, limits: SandboxLimits) -> None:
        memory = None if limits.memory_mb is None else str(limits.memory_mb << 20)
        pids = None if limits.max_processes is None else str(limits.max_processes)
        if self.mechanism == "cgroup v2":
            settings = {"memory.max": memory, "memory.swap.max": memory and "0", "pids.max": pids}
        else:  # one directory per hierarchy: write what exists there
            settings = {
                "memory.limit_in_bytes": memory,
                "memory.memsw.limit_in_bytes": memory,  # no swapping past the limit
                "pids.max": pids,
            }
        for file_name, value in settings.items():
            path = directory / file_name
            if value is not None and path.exists():
                path.write_text(value)

    def release(self, name: str) -> None:
        """Remove the cgroups of sandbox ``name`` if it has any (killing what is left)."""
        if self._runtime_dirs:
            SandboxGroup([runtime_dir / name for runtime_dir in self._runtime_dirs]).release()

    def close(self) -> None:
        """Remove this runtime's cgroups (killing what is left in them)."""
        runtime_dirs, self._runtime_dirs = self._runtime_dirs, []
        self._remove_own(runtime_dirs)

    @staticmethod
    def _remove_own(directories: list[Path]) -> None:
        deadline = time.monotonic() + RELEASE_TIMEOUT
        with _owner_lock:
            for directory in directories:
                _remove_group_tree(directory, deadline)
                with contextlib.suppress(OSError):  # still used by another runtime here
                    directory.parent.rmdir()


def reclaim_stale_groups(base: Path) -> None:
    """Remove the cgroups under ``base`` of emulators that are gone."""
    for owner_dir in _children(base):
        if OWNER_RE.match(owner_dir.name) and owner_gone(owner_dir.name):
            with contextlib.suppress(EmulatorError):  # retried by the next emulator
                _remove_group_tree(owner_dir, time.monotonic() + RELEASE_TIMEOUT)


def _children(directory: Path) -> list[Path]:
    try:
        return [entry for entry in directory.iterdir() if entry.is_dir()]
    except OSError:
        return []


def _remove_group_tree(directory: Path, deadline: float) -> None:
    for child in _children(directory):
        _remove_group_tree(child, deadline)
    _remove_group(directory, deadline)


def _remove_group(directory: Path, deadline: float) -> None:
    while True:
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise EmulatorError(f"could not remove the cgroup {directory}: {exc}") from exc
        _kill_members(directory)
        time.sleep(0.01)


def _kill_members(directory: Path) -> None:
    with contextlib.suppress(OSError):
        for line in (directory / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line), signal.SIGKILL)


def _cgroup_mounts() -> dict[str, list[Path]]:
    """Mount points by controller (v1) and under ``"cgroup2"`` (the unified hierarchy)."""
    found: dict[str, list[Path]] = {}
    try:
        with open("/proc/self/mountinfo") as mountinfo:
            lines = mountinfo.read().splitlines()
    except OSError:
        return found
    for line in lines:
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mount_point = Path(fields[4].replace("\\040", " "))
        if tail[0] == "cgroup2":
            found.setdefault("cgroup2", []).append(mount_point)
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                found.setdefault(option, []).append(mount_point)
    return found


def _v2_controllers(root: Path) -> set[str]:
    try:
        return set((root / "cgroup.controllers").read_text().split())
    except OSError:
        return set()


def _enable_controllers(directory: Path) -> None:
    (directory / "cgroup.subtree_control").write_text("+memory +pids")
