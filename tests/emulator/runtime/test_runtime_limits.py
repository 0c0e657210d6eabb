"""Memory and process-count limits per sandbox: cgroups where writable (here: v1), enforced on
everything the sandbox starts and removed with it; rlimits otherwise, which say what they
cannot do; cgroups of a SIGKILLed emulator are reclaimed by the next one."""

from __future__ import annotations

import errno
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from emulator_testing import eventually
from runtime_testing import ISOLATIONS, sh

from pytest_northflank.emulator.runtime import Container, ContainerRuntime
from pytest_northflank.emulator.runtime.limits import (
    GROUP_ROOT,
    LimitEnforcer,
    SandboxLimits,
)
from pytest_northflank.emulator.runtime.owners import owner_name
from pytest_northflank.errors import EmulatorError


def cgroup_mechanism() -> str:
    enforcer = LimitEnforcer()
    enforcer.close()
    return enforcer.mechanism


CGROUPS = cgroup_mechanism() != "rlimit"
needs_cgroups = pytest.mark.skipif(not CGROUPS, reason="no writable memory and pids cgroups")
FORK_UNTIL_REFUSED = """
import os, signal
children = []
try:
    for _ in range(100):
        pid = os.fork()
        if pid == 0:
            signal.pause()
        children.append(pid)
except OSError as exc:
    print(len(children), exc.errno)
for pid in children:
    os.kill(pid, signal.SIGKILL)
"""
ALLOCATE = "python3 -c 'import sys; b = bytearray(int(sys.argv[1]) << 20); print(len(b) >> 20)'"


def cgroup_dirs(container: Container) -> list[Path]:
    return [Path(procs).parent for procs in container.limits_spec["cgroup_procs"]]


def limit_file(container: Container, name: str) -> str:
    for directory in cgroup_dirs(container):
        if (directory / name).exists():
            return (directory / name).read_text().strip()
    raise AssertionError(f"no {name} in {cgroup_dirs(container)}")


@pytest.fixture(params=ISOLATIONS)
def limited(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContainerRuntime]:
    """A runtime whose sandboxes may run 40 processes, with cgroups."""
    if not CGROUPS:
        pytest.skip("no writable memory and pids cgroups")
    with ContainerRuntime(request.param, tmp_path / "state", max_processes=40) as runtime:
        assert runtime.limits_mechanism in ("cgroup v1", "cgroup v2")
        yield runtime


def test_memory_follows_the_plan_and_is_enforced(limited: ContainerRuntime) -> None:
    container = limited.start("mem", ["sleep", "infinity"], {}, memory_mb=64)
    name = "memory.max" if limited.limits_mechanism == "cgroup v2" else "memory.limit_in_bytes"
    assert limit_file(container, name) == str(64 << 20)
    small = sh(container, f"{ALLOCATE} 16")
    assert (small.exit_code, small.stdout) == (0, b"16\n"), small
    big = sh(container, f"{ALLOCATE} 200")
    assert big.exit_code == 137, big  # killed by the OOM killer of the sandbox's cgroup
    assert container.is_running()  # the sandbox lives on


def test_the_process_count_is_enforced_on_every_exec(limited: ContainerRuntime) -> None:
    container = limited.start("pids", ["sleep", "infinity"], {})
    assert limit_file(container, "pids.max") == "40"
    forked = sh(container, f"python3 -c '{FORK_UNTIL_REFUSED}'")
    count, error = forked.stdout.split()
    assert int(error) == errno.EAGAIN, forked
    assert 30 <= int(count) < 40  # the limit counts the launchers, sleep and python too
    assert int(limit_file(container, "pids.current")) <= 40
    container.stop(grace=0)
    assert not any(directory.exists() for directory in cgroup_dirs(container))


def test_the_cgroups_go_with_the_sandbox_and_the_runtime(tmp_path: Path) -> None:
    if not CGROUPS:
        pytest.skip("no writable memory and pids cgroups")
    runtime = ContainerRuntime("directory", tmp_path / "state")
    container = runtime.start("escaper", ["sh", "-c", "setsid sleep 900 & sleep infinity"], {})
    directories = cgroup_dirs(container)
    owners = {directory.parent for directory in directories}
    assert all(directory.is_dir() for directory in directories)

    def members() -> set[int]:
        return {int(pid) for pid in (directories[0] / "cgroup.procs").read_text().split()}

    assert eventually(lambda: len(members()) >= 3)  # the launcher, sh and the escaped sleep
    started = members()
    runtime.shutdown()
    assert not any(directory.exists() for directory in directories)
    assert not any(owner.exists() for owner in owners)
    assert eventually(lambda: not any(Path(f"/proc/{pid}").exists() for pid in started))


def test_rlimits_where_no_cgroup_is_used(tmp_path: Path) -> None:
    with ContainerRuntime(
        "directory", tmp_path / "state", max_processes=50, limits="rlimit"
    ) as runtime:
        assert runtime.limits_mechanism == "rlimit"
        assert "per process (RLIMIT_AS)" in runtime.limits_reason
        assert "does not bind root" in runtime.limits_reason
        container = runtime.start("rl", ["sleep", "infinity"], {}, memory_mb=256)
        assert "cgroup_procs" not in container.limits_spec
        limits = sh(container, "grep -E 'Max (processes|address space)' /proc/self/limits")
        assert limits.stdout.split() == [
            b"Max", b"processes", b"50", b"50", b"processes",
            b"Max", b"address", b"space", str(256 << 20).encode(), str(256 << 20).encode(),
            b"bytes",
        ]  # fmt: skip
        assert sh(container, f"{ALLOCATE} 16").stdout == b"16\n"
        assert b"MemoryError" in sh(container, f"{ALLOCATE} 400").stderr


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "64"])
def test_bad_limits_are_refused(bad: object, tmp_path: Path) -> None:
    with pytest.raises(EmulatorError, match="max_processes must be a positive integer"):
        ContainerRuntime("directory", tmp_path, max_processes=bad)  # type: ignore[arg-type]
    with pytest.raises(EmulatorError, match="memory_mb must be a positive integer"):
        SandboxLimits(memory_mb=bad)  # type: ignore[arg-type]
    with pytest.raises(EmulatorError, match="limits must be 'auto', 'cgroup' or 'rlimit'"):
        LimitEnforcer("none")  # type: ignore[arg-type]


@needs_cgroups
def test_cgroups_of_a_dead_emulator_are_reclaimed_and_a_live_one_kept() -> None:
    enforcer = LimitEnforcer()
    bases = enforcer.bases
    enforcer.close()
    assert bases
    assert all(base.name == GROUP_ROOT for base in bases)
    dead = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)  # fmt: skip
    alive = subprocess.Popen(["sleep", "60"])
    try:
        dead_owner, live_owner = owner_name(dead.pid), owner_name(alive.pid)
        dead.communicate(b"")
        made = []
        for base in bases:
            for owner in (dead_owner, live_owner):
                (base / owner / "leftover").mkdir(parents=True)
                made.append(base / owner)
        LimitEnforcer().close()  # a new emulator's enforcer reclaims on start
        assert not any((base / dead_owner).exists() for base in bases)
        assert all((base / live_owner / "leftover").is_dir() for base in bases)
    finally:
        alive.kill()
        alive.wait()
        for base in bases:
            for leftover in ((base / live_owner / "leftover"), (base / live_owner)):
                if leftover.exists():
                    leftover.rmdir()


@needs_cgroups
def test_runtimes_of_one_process_keep_their_own_cgroups(tmp_path: Path) -> None:
    first = ContainerRuntime("directory", tmp_path / "first")
    second = ContainerRuntime("directory", tmp_path / "second")
    try:
        kept = second.start("kept", ["sleep", "infinity"], {})
        first.shutdown()  # removes its cgroups only
        assert all(directory.is_dir() for directory in cgroup_dirs(kept))
        later = second.start("later", ["sleep", "infinity"], {})
        assert sh(later, "echo started").stdout == b"started\n"
    finally:
        first.shutdown()
        second.shutdown()
