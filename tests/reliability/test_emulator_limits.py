"""Each emulated sandbox is held to its plan's memory and a process count: a fork bomb in one
sandbox stops at the limit while the other sandboxes, the emulator's API and the host go on
answering, and deleting the sandbox takes its processes and cgroups with it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from reliability_helpers import make_sandbox

from pytest_northflank.client import NorthflankClient
from pytest_northflank.emulator import EmulatorServer
from pytest_northflank.emulator.runtime import Container
from pytest_northflank.emulator.runtime.limits import LimitEnforcer
from pytest_northflank.errors import ExecError


def cgroup_mechanism() -> str:
    enforcer = LimitEnforcer()
    enforcer.close()
    return enforcer.mechanism


pytestmark = pytest.mark.skipif(
    cgroup_mechanism() == "rlimit", reason="no writable memory and pids cgroups here"
)
MAX_PROCESSES = 64
# Every copy forks for ever (pausing a little after each refusal, to spare the shared CI
# machine's CPU; the process count is what is contained). In the background, its output
# going nowhere, so the exec that starts it returns.
FORK_BOMB = """python3 -c '
import os, time
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.05)
' </dev/null >/dev/null 2>&1 &
echo launched"""


@pytest.fixture(scope="module")
def limited() -> Iterator[EmulatorServer]:
    with EmulatorServer(max_processes=MAX_PROCESSES) as server:
        yield server


@pytest.fixture(scope="module")
def nf(limited: EmulatorServer) -> Iterator[NorthflankClient]:
    with NorthflankClient(limited.token, base_url=limited.url) as client:
        yield client


def container_of(server: EmulatorServer, service_id: str) -> Container:
    return next(c for c in server.runtime.containers() if c.sandbox_id.startswith(service_id))


def cgroup_dirs(container: Container) -> list[Path]:
    return [Path(procs).parent for procs in container.limits_spec["cgroup_procs"]]


def read_value(container: Container, name: str) -> str:
    for directory in cgroup_dirs(container):
        if (directory / name).exists():
            return (directory / name).read_text()
    raise AssertionError(f"no {name} among {cgroup_dirs(container)}")


def times_refused(container: Container) -> int:
    """How often a fork was refused at the pids limit (``max N`` in pids.events)."""
    events = dict(line.split() for line in read_value(container, "pids.events").splitlines())
    return int(events["max"])


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_plan_sets_the_memory(limited: EmulatorServer, nf: NorthflankClient) -> None:
    small = make_sandbox(nf, plan="nf-compute-10")
    try:
        container = container_of(limited, small.id)
        if limited.runtime.limits_mechanism == "cgroup v2":
            assert read_value(container, "memory.max").strip() == str(256 << 20)
        else:
            assert read_value(container, "memory.limit_in_bytes").strip() == str(256 << 20)
        assert read_value(container, "pids.max").strip() == str(MAX_PROCESSES)
        hog = small.run("python3 -c 'b = bytearray(400 << 20)'", timeout=60)
        assert hog.exit_code == 137  # the OOM killer, inside the sandbox's cgroup only
        assert small.run("echo still here", timeout=30).stdout == "still here\n"
    finally:
        small.delete()


def test_a_fork_bomb_is_contained(limited: EmulatorServer, nf: NorthflankClient) -> None:
    bystander = make_sandbox(nf)
    bomb = make_sandbox(nf)
    container = container_of(limited, bomb.id)
    directories = cgroup_dirs(container)
    try:
        assert bomb.run(FORK_BOMB, timeout=60).stdout == "launched\n"
        assert wait_for(lambda: times_refused(container) > 0)  # it hit the limit
        assert wait_for(lambda: int(read_value(container, "pids.current")) == MAX_PROCESSES)
        # The others and the host go on: another sandbox runs commands, the API answers.
        assert bystander.run("echo alive", timeout=30).stdout == "alive\n"
        assert nf.get_service(bomb.project_id, bomb.id).id == bomb.id
        assert limited.control.state()["services"]
        assert subprocess.run(["true"], timeout=30).returncode == 0
        members = [int(pid) for pid in (directories[0] / "cgroup.procs").read_text().split()]
        assert len(members) == MAX_PROCESSES  # still at the limit: the bomb goes on
        with pytest.raises(ExecError, match="as many processes as its limit allows"):
            bomb.run("echo in the bomb's sandbox", timeout=30)  # no room left there
    finally:
        bomb.delete()
    assert wait_for(lambda: not any(directory.exists() for directory in directories))
    assert wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in members))
    assert bystander.run("echo still alive", timeout=30).stdout == "still alive\n"
    bystander.delete()


def test_a_job_run_gets_its_plan_memory(limited: EmulatorServer) -> None:
    jobs = "/v1/projects/default-project/jobs"
    body = {
        "name": "plan-memory-job",
        "billing": {"deploymentPlan": "nf-compute-50"},
        "backoffLimit": 0,
        "deployment": {
            "external": {"imagePath": "ubuntu:22.04"},
            "docker": {"configType": "customCommand", "customCommand": "sleep 600"},
        },
    }
    headers = {"Authorization": f"Bearer {limited.token}"}
    with httpx.Client(base_url=limited.url, headers=headers, timeout=30) as http:
        job = http.post(f"{jobs}/manual", json=body).json()["data"]
        http.post(f"{jobs}/{job['id']}/runs", json={}).raise_for_status()
        try:
            assert wait_for(lambda: any(c.sandbox_id.startswith(job["id"])
                                        for c in limited.runtime.containers()))  # fmt: skip
            container = container_of(limited, job["id"])
            name = "memory.max" if limited.runtime.limits_mechanism == "cgroup v2" else (
                "memory.limit_in_bytes"
            )  # fmt: skip
            assert read_value(container, name).strip() == str(1024 << 20)
        finally:
            http.delete(f"{jobs}/{job['id']}").raise_for_status()
