"""A namespace sandbox's /dev is its own: a private devpts (the host's terminals are neither
seen nor written), fresh device nodes whose metadata the sandbox may change without touching
the host's, and execs with a tty get their terminal from the sandbox's devpts."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from emulator_testing import eventually
from runtime_testing import (
    Harness,
    collect,
    needs_namespaces,
    run,
    sh,
)

from pytest_northflank.emulator.runtime import Container
from pytest_northflank.errors import EmulatorError

pytestmark = needs_namespaces
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


@pytest.fixture
def isolation() -> str:
    return "namespace"


@pytest.fixture
def host_terminal() -> Iterator[tuple[int, str]]:
    """A pseudo-terminal of the host: its master and its /dev/pts path."""
    master, slave = os.openpty()
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def metadata(path: str) -> tuple[int, ...]:
    """What chmod, chown and touch change."""
    info = os.stat(path)
    return (info.st_mode, info.st_uid, info.st_gid, info.st_mtime_ns, info.st_ctime_ns)


def tty_exec(container: Container, script: str) -> str:
    async def go() -> str:
        process = await container.exec(["sh", "-c", script], tty=True)
        await process.close_stdin()
        result = await collect(process)
        assert result.exit_code == 0, result
        return result.stdout.decode()

    return run(go())


def test_the_host_terminals_are_out_of_sight_and_reach(
    harness: Harness, host_terminal: tuple[int, str]
) -> None:
    master, path = host_terminal
    container = harness.start()
    listing = sh(container, "ls /dev/pts")
    assert listing.exit_code == 0
    assert listing.stdout.split() == [b"ptmx"]  # nothing of the host's
    written = sh(container, f"echo intruder > {path}")
    assert written.exit_code != 0
    os.set_blocking(master, False)
    with pytest.raises(BlockingIOError):
        os.read(master, 100)  # nothing reached the host's terminal
    mounts = sh(container, "grep ' /dev/pts ' /proc/self/mounts").stdout.decode()
    assert re.search(r"^devpts /dev/pts devpts \S*ptmxmode=0?666", mounts, re.M), mounts


def test_a_tty_exec_gets_its_terminal_from_the_sandbox_devpts(harness: Harness) -> None:
    first, second = harness.start(), harness.start()
    # Each sandbox numbers its terminals from 0: separate devpts instances.
    assert tty_exec(first, "tty").strip() == "/dev/pts/0"
    assert tty_exec(second, "tty; ls /dev/pts").split() == ["/dev/pts/0", "0", "ptmx"]
    # The terminal is gone with the exec; the host never saw it among its own.
    assert sh(first, "ls /dev/pts").stdout.split() == [b"ptmx"]


def test_device_nodes_are_the_sandbox_own(harness: Harness) -> None:
    container = harness.start()
    host = {name: metadata(f"/dev/{name}") for name in DEVICES}
    inside = sh(
        container, "for d in " + " ".join(DEVICES) + "; do stat -c '%d %i %t:%T %a' /dev/$d; done"
    )
    assert inside.exit_code == 0, inside
    for name, line in zip(DEVICES, inside.stdout.decode().splitlines(), strict=True):
        device, inode, numbers, mode = line.split()
        info = os.stat(f"/dev/{name}")
        # The same major:minor, but not the host's inode: never touch the host's node below.
        assert (int(device), int(inode)) != (info.st_dev, info.st_ino), name
        assert numbers == f"{os.major(info.st_rdev):x}:{os.minor(info.st_rdev):x}", name
        assert mode == "666", name
    changed = sh(
        container,
        "chmod 600 /dev/null /dev/zero && chown 1:1 /dev/full && touch /dev/urandom && "
        "stat -c '%a %u' /dev/null /dev/full && echo data > /dev/null && "
        "head -c 4 /dev/zero | wc -c",
    )
    assert changed.stdout.split() == [b"600", b"0", b"666", b"1", b"4"], changed
    assert {name: metadata(f"/dev/{name}") for name in DEVICES} == host
    refused = sh(container, "mknod /dev/disk b 8 0")
    assert refused.exit_code != 0
    assert b"Operation not permitted" in refused.stderr


def test_no_terminal_through_a_root_the_main_process_changed(harness: Harness) -> None:
    # Root inside could plant links under a new root; the terminal is never looked up there.
    container = harness.start(["chroot", "/usr", "/bin/sleep", "infinity"])
    if not eventually(lambda: os.readlink(f"/proc/{container.pid}/root") != "/", timeout=5):
        pytest.skip("chroot /usr /bin/sleep does not run on this userland")
    with pytest.raises(EmulatorError, match="changed its root directory"):
        tty_exec(container, "tty")
    assert sh(container, "echo without a tty").stdout == b"without a tty\n"


NO_MKNOD_SCRIPT = """
import sys
from pytest_northflank.emulator.runtime import ContainerRuntime
sys.path[:0] = sys.argv[2:]
from runtime_testing import sh

with open(sys.argv[1] + "/cgroup.procs", "w") as procs:
    procs.write("0")  # mknod is refused from here on, to this process and its children
with ContainerRuntime("namespace") as runtime:
    box = runtime.start("no-mknod", ["sleep", "infinity"], {})
    for script in ("stat -c '%d %i' /dev/null", "chmod 600 /dev/null", "echo x > /dev/null"):
        result = sh(box, script)
        print(result.exit_code, result.stdout.decode().strip(), result.stderr.decode().strip())
"""


def test_without_mknod_the_host_nodes_are_bound_read_only(tmp_path: Path) -> None:
    devices = Path("/sys/fs/cgroup/devices")
    if not (devices / "devices.deny").exists():
        pytest.skip("no cgroup v1 devices controller to refuse mknod with")
    group = devices / f"pytest-northflank-test-{os.getpid()}"
    group.mkdir()
    try:
        for kind in "cb":  # ("a" would refuse every access, not just mknod)
            (group / "devices.deny").write_text(f"{kind} *:* m")
        here = str(Path(__file__).parent)
        done = subprocess.run(
            [sys.executable, "-c", NO_MKNOD_SCRIPT, str(group), here, str(Path(here).parent)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        group.rmdir()
    assert done.returncode == 0, done.stderr
    null = os.stat("/dev/null")
    same_node, chmod, write = done.stdout.splitlines()
    assert same_node == f"0 {null.st_dev} {null.st_ino} "  # the host's node, bound
    assert chmod.startswith("1  ")
    assert "Read-only file system" in chmod
    assert write == "0  "  # and it still works
    assert stat.S_IMODE(os.stat("/dev/null").st_mode) == stat.S_IMODE(null.st_mode)
