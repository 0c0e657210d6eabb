"""Stopping sandboxes: stop, shutdown, and the owner dying without a word."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest
from emulator_testing import eventually
from runtime_testing import (
    MARKER,
    Harness,
    marked_processes,
    mounts_mentioning,
    run,
    sh,
)

from pytest_northflank.emulator.runtime import (
    ContainerRuntime,
    ExecProcess,
)
from pytest_northflank.errors import EmulatorError

# -- stop, shutdown and the owner dying -------------------------------------------------------

BACKGROUND = "sleep 1001 >/dev/null 2>&1 & setsid sleep 1002 >/dev/null 2>&1 & echo started"


def test_stop_kills_everything_and_removes_the_sandbox(harness: Harness) -> None:
    container = harness.start()
    assert sh(container, BACKGROUND).stdout == b"started\n"

    async def long_running() -> ExecProcess:
        return await container.exec(["sleep", "1003"])

    running = run(long_running())
    assert eventually(lambda: len(marked_processes(harness.marker)) >= 4)
    assert container in harness.runtime.containers()
    container.stop()
    assert marked_processes(harness.marker) == []
    assert not container.is_running()
    # As PID 1 of a namespace, sleep ignores SIGTERM; elsewhere SIGTERM kills it.
    killed_by = signal.SIGKILL if container.isolation == "namespace" else signal.SIGTERM
    assert container.exit_code() == 128 + killed_by
    assert not container.directory.exists()
    assert mounts_mentioning(container.directory) == []
    assert container not in harness.runtime.containers()
    assert running.returncode is None  # its loop is gone; the process is not
    assert not psutil.pid_exists(running.pid) or (
        psutil.Process(running.pid).status() == psutil.STATUS_ZOMBIE
    )
    container.stop()  # idempotent


def test_stop_gives_a_sigterm_handler_its_grace(harness: Harness) -> None:
    script = 'trap "echo got-term; exit 0" TERM; echo ready; while :; do sleep 0.05; done'
    container = harness.start(["sh", "-c", script])
    assert eventually(lambda: [line.text for line in container.log_lines()] == ["ready"])
    container.stop(grace=30)
    assert container.exit_code() == 0
    assert [line.text for line in container.log_lines()] == ["ready", "got-term"]


def test_shutdown_stops_all_containers_and_refuses_new_ones(isolation: str, tmp_path: Path) -> None:
    runtime = ContainerRuntime(isolation, state_dir=tmp_path)  # type: ignore[arg-type]
    containers = [
        runtime.start(f"sd-{n}-{uuid.uuid4().hex[:8]}", ["sleep", "infinity"], {}) for n in range(3)
    ]
    runtime.shutdown()
    assert all(not container.is_running() for container in containers)
    assert runtime.containers() == []
    assert list(tmp_path.iterdir()) == []
    runtime.shutdown()
    with pytest.raises(EmulatorError, match="shut down"):
        runtime.start("after-shutdown", ["true"], {})


def test_default_state_dir_is_removed_by_shutdown(isolation: str) -> None:
    runtime = ContainerRuntime(isolation)  # type: ignore[arg-type]
    runtime.start(f"default-dir-{uuid.uuid4().hex[:8]}", ["sleep", "infinity"], {})
    assert runtime.state_dir.is_dir()
    runtime.shutdown()
    assert not runtime.state_dir.exists()


OWNER_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from pytest_northflank.emulator.runtime import ContainerRuntime

runtime = ContainerRuntime(sys.argv[1], state_dir=Path(sys.argv[2]))
container = runtime.start("owned", ["sleep", "infinity"], {sys.argv[3]: sys.argv[4]})

async def execs():
    done = await container.exec(["sh", "-c", sys.argv[5]])
    await done.wait()
    return await container.exec(["sleep", "1003"])

still_running = asyncio.run(execs())
print(json.dumps({"directory": str(container.directory)}), flush=True)
sys.stdin.read()  # until killed
"""


def test_sigkill_of_the_owner_leaves_no_process_and_no_mount(
    isolation: str, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, isolation, str(tmp_path), MARKER, marker, BACKGROUND],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert owner.stdout is not None
        directory = Path(json.loads(owner.stdout.readline())["directory"])
        assert eventually(lambda: len(marked_processes(marker)) >= 4)
        if isolation == "namespace":
            assert mounts_mentioning(directory) != []  # inside the sandbox only
        owner.send_signal(signal.SIGKILL)
        assert owner.wait(10) == -signal.SIGKILL
        assert eventually(lambda: not marked_processes(marker)), marked_processes(marker)
        assert mounts_mentioning(directory) == []
        assert str(directory) not in Path("/proc/self/mounts").read_text()
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.wait()
        for stream in (owner.stdin, owner.stdout):
            if stream is not None:
                stream.close()
