"""``pytest-northflank forward NAME PORT``: a kept sandbox's port on this machine until Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pytest_northflank.client import DeploymentServiceSpec, NorthflankClient
from pytest_northflank.emulator import EmulatorServer

PROJECT = "default-project"
REVERSE = (
    'python3 -c "import socket\n'
    "s = socket.create_server(('127.0.0.1', 7000))\n"
    "while True:\n"
    "    c = s.accept()[0]\n"
    '    c.sendall(c.recv(100)[::-1]); c.close()"'
)


@pytest.fixture
def kept(emulator: EmulatorServer) -> Iterator[str]:
    with NorthflankClient(emulator.token, base_url=emulator.url) as client:
        spec = DeploymentServiceSpec(
            name=f"kept-{os.getpid()}-{id(emulator) % 1000}",
            command=REVERSE,
            ports=[{"port": 7000, "protocol": "TCP"}],
        )
        service = client.create_deployment_service(PROJECT, spec)
        client.wait_for_service_ready(PROJECT, service.id, timeout=60, poll_interval=0.05)
        yield service.id
        client.delete_service(PROJECT, service.id)


def forward(emulator: EmulatorServer, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "NORTHFLANK_API_TOKEN": emulator.token,
        "NORTHFLANK_API_BASE_URL": emulator.url,
        "NORTHFLANK_PROJECT_ID": PROJECT,
        "NORTHFLANK_CA_FILE": str(emulator.ca_file),
    }
    argv = [sys.executable, "-m", "pytest_northflank.cli", "forward", *args]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_forward_carries_a_port_until_interrupted(emulator: EmulatorServer, kept: str) -> None:
    if emulator.isolation != "namespace":
        pytest.skip("the emulator runs in directory isolation: sandboxes have no network")
    process = forward(emulator, kept, "7000")
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.match(rf"forwarding (127\.0\.0\.1):(\d+) -> {kept}:7000 ", line)
        assert found, line + (process.stderr.read() if process.poll() is not None else "")
        for word, backwards in ((b"stressed", b"desserts"), (b"live", b"evil")):
            with socket.create_connection((found[1], int(found[2])), timeout=10) as sock:
                sock.sendall(word)
                assert b"".join(iter(lambda: sock.recv(100), b"")) == backwards
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        assert emulator.token not in line
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_forward_explains_what_cannot_be_forwarded(emulator: EmulatorServer, kept: str) -> None:
    process = forward(emulator, kept, "7001")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    if emulator.isolation == "namespace":
        assert f"service {kept!r} has no forwardable port 7001 (its TCP/HTTP ports: 7000)" in err
    else:
        assert "directory isolation" in err
    assert emulator.token not in err
