"""The emulator's own boundary: it listens on loopback unless told otherwise, answers nothing
without its token (REST, control plane, both WebSockets), and runs commands only inside a
running sandbox (never for an unknown, paused or tricked-out target, never on the host)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from reliability_helpers import PROJECT, make_sandbox, output, run_pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from pytest_northflank.client import NorthflankClient
from pytest_northflank.emulator import EmulatorServer
from pytest_northflank.emulator.__main__ import build_parser
from pytest_northflank.emulator.runtime.host_view import IMAGE_ROOT

if TYPE_CHECKING:
    from pytest_northflank.sandbox import Sandbox


def outward_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent for UDP connect
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def exec_frames(
    server: EmulatorServer, path: str, first: dict[str, Any] | str, *rest: dict[str, Any]
) -> list[dict[str, Any]]:
    """Open a WebSocket, send the frames, and return what the server sent until it closed
    (hanging up after a refusal, as the official clients do)."""
    url = "ws://" + server.url.removeprefix("http://") + path
    received: list[dict[str, Any]] = []
    with connect(url, open_timeout=30, close_timeout=5) as ws:
        for frame in (first, *rest):
            ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        try:
            while True:
                received.append(json.loads(ws.recv(timeout=30)))
                kind, data = received[-1].get("type"), received[-1].get("data")
                refused = kind == "error" or (
                    kind == "init" and isinstance(data, dict) and data.get("auth") != "successful"
                )
                if refused or kind == "completion":
                    break
        except ConnectionClosed:
            pass
    return received


def init(token: str, **context: Any) -> dict[str, Any]:
    return {
        "type": "init",
        "data": {"auth": {"type": "apiToken", "apiToken": token}, "context": context},
    }


def exec_path(service_id: str, project: str = PROJECT, segment: str = "services") -> str:
    return f"/v1/command-exec/projects/{project}/{segment}/{service_id}"


def main_process_running(emulator: EmulatorServer, service_id: str) -> bool:
    services = emulator.control.state()["services"]
    instance = next(s["instance"] for s in services if s["id"] == service_id)
    return bool(instance and instance["running"])


@pytest.fixture(scope="module")
def box(client: NorthflankClient) -> Iterator[Sandbox]:
    made = make_sandbox(client)
    yield made
    made.delete()


def marker_file(box: Sandbox) -> str:
    """A file name that proves whether a command ran (it is created by the command)."""
    return f"ran-{secrets.token_hex(4)}"


# ------------------------------------------------------------------------------- binding


def test_it_listens_on_loopback_unless_told_otherwise() -> None:
    assert build_parser().parse_args([]).host == "127.0.0.1"
    outward = outward_address()
    with EmulatorServer() as default:
        assert default.url.startswith("http://127.0.0.1:")
        assert reachable("127.0.0.1", default.port)
        if outward is not None:
            assert not reachable(outward, default.port)
    if outward is None:
        pytest.skip("this machine has no address besides loopback to try")
    with EmulatorServer(host="0.0.0.0") as everywhere:  # told otherwise
        assert reachable(outward, everywhere.port)


def test_the_embedded_emulator_of_a_run_is_on_loopback(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_where="""
        def test_where(nf_client):
            assert nf_client.base_url.startswith("http://127.0.0.1:"), nf_client.base_url
        """
    )
    result = run_pytest(pytester)
    result.assert_outcomes(passed=1)
    assert "0.0.0.0" not in output(result)


# ---------------------------------------------------------------------------- the token


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Token TOKEN"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "wrong-token"},
    ],
    ids=["none", "wrong", "other-scheme", "basic", "no-scheme"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/projects"),
        ("POST", f"/v1/projects/{PROJECT}/services/deployment"),
        ("DELETE", f"/v1/projects/{PROJECT}/services/anything"),
        ("GET", "/_emulator/state"),
        ("POST", "/_emulator/reset"),
        ("POST", "/_emulator/faults/requests"),
        ("DELETE", f"/_emulator/projects/{PROJECT}/services/anything"),
    ],
)
def test_rest_and_control_plane_refuse_requests_without_the_token(
    emulator: EmulatorServer, headers: dict[str, str], method: str, path: str
) -> None:
    before = emulator.control.state()
    headers = {name: value.replace("TOKEN", emulator.token) for name, value in headers.items()}
    response = httpx.request(method, emulator.url + path, headers=headers, json={}, timeout=30)
    assert response.status_code == 401
    body = response.json()
    assert body["error"]["status"] == 401
    assert emulator.token not in response.text
    after = emulator.control.state()
    assert after["services"] == before["services"]
    assert after["faults"] == before["faults"]


@pytest.mark.parametrize(
    "first",
    [
        "not json",
        {"type": "init", "data": {}},
        {"type": "init", "data": {"auth": {"type": "apiToken"}}},
        {"type": "init", "data": {"auth": {"type": "apiToken", "apiToken": "wrong"}}},
        {"type": "init", "data": {"auth": {"type": "bearer", "apiToken": "TOKEN"}}},
        {"type": "payload", "data": "ZWNobw=="},
    ],
    ids=["garbage", "no-auth", "no-token", "wrong-token", "wrong-type", "not-init"],
)
def test_both_websockets_refuse_a_connection_without_the_token(
    emulator: EmulatorServer, box: Sandbox, first: dict[str, Any] | str
) -> None:
    ran = marker_file(box)
    if isinstance(first, dict):
        first = json.loads(json.dumps(first).replace('"TOKEN"', json.dumps(emulator.token)))
        data = first.get("data")
        if isinstance(data, dict) and data.get("auth"):
            data["context"] = {"command": ["touch", f"/tmp/{ran}"]}
    for path in (exec_path(box.id), f"/v1/projects/{PROJECT}/services/{box.id}/logs"):
        received = exec_frames(emulator, path, first)
        assert received, "the server answered nothing"
        last = received[-1]
        assert last["type"] in ("init", "error")
        if last["type"] == "init":
            assert last["data"]["auth"] != "successful"
        assert all(frame["type"] not in ("stdOut", "log-lines") for frame in received)
    assert not box.exists(f"/tmp/{ran}")  # nothing ran


# --------------------------------------------------------------------- exec targets


@pytest.mark.parametrize(
    ("project", "segment", "service"),
    [
        (PROJECT, "services", "no-such-service"),
        ("no-such-project", "services", "BOX"),
        (PROJECT, "jobs", "BOX"),
        (PROJECT, "addons", "BOX"),
        (PROJECT, "services", ".."),
        (PROJECT, "services", "%2e%2e"),
        (PROJECT, "services", "..%2F..%2Fetc"),
        (PROJECT, "services", "BOX%2F..%2FBOX"),
        (PROJECT, "services", "BOX%00"),
        ("..", "services", "BOX"),
    ],
)
def test_exec_runs_nothing_for_a_target_that_is_not_a_running_sandbox(
    emulator: EmulatorServer, box: Sandbox, project: str, segment: str, service: str
) -> None:
    ran = marker_file(box)
    path = exec_path(service.replace("BOX", box.id), project, segment)
    try:
        received = exec_frames(
            emulator, path, init(emulator.token, command=["touch", f"/tmp/{ran}"])
        )
    except InvalidStatus as refused:  # refused at the upgrade (no such route): nothing ran
        received = [{"type": "error", "status": refused.response.status_code}]
    assert received[-1]["type"] == "error", received
    assert all(frame["type"] not in ("stdOut", "completion") for frame in received)
    assert not box.exists(f"/tmp/{ran}")


def test_exec_into_a_paused_or_stopped_sandbox_runs_nothing(
    emulator: EmulatorServer, client: NorthflankClient
) -> None:
    paused = make_sandbox(client)
    ended = make_sandbox(client, command="sh -c 'sleep 0.5; exit 0'")
    try:
        client.pause_service(PROJECT, paused.id)
        received = exec_frames(emulator, exec_path(paused.id), init(emulator.token, command=["id"]))
        assert received[-1] == {
            "type": "error",
            "data": {
                "message": f"Cannot exec into service {paused.id!r} in project {PROJECT!r}: the "
                "service is paused"
            },
        }
        deadline = time.monotonic() + 60
        while main_process_running(emulator, ended.id):
            if time.monotonic() >= deadline:
                pytest.fail("the main process did not end")
            time.sleep(0.05)
        received = exec_frames(emulator, exec_path(ended.id), init(emulator.token, command=["id"]))
        assert received[-1]["type"] == "error"
        assert "no running instance" in received[-1]["data"]["message"]
    finally:
        paused.delete()
        ended.delete()


def test_exec_refuses_another_instance_or_container(emulator: EmulatorServer, box: Sandbox) -> None:
    for context in ({"instanceName": "someone-else-abc-123"}, {"containerName": "other"}):
        received = exec_frames(
            emulator, exec_path(box.id), init(emulator.token, command=["id"], **context)
        )
        assert received[-1]["type"] == "error"
        assert "not found" in received[-1]["data"]["message"]


# ------------------------------------------------------------------ the host's files


@pytest.fixture
def namespaced(emulator: EmulatorServer, box: Sandbox) -> Sandbox:
    if emulator.isolation != "namespace":
        pytest.skip(
            f"directory isolation shares the host's files by design ({emulator.isolation_reason})"
        )
    return box


def test_writes_to_etc_stay_in_the_sandbox(namespaced: Sandbox) -> None:
    name = f"/etc/nf-reliability-{secrets.token_hex(4)}"
    namespaced.run(["sh", "-c", 'echo inside > "$1"', "sh", name], check=True)
    assert namespaced.read_text(name) == "inside\n"
    assert not Path(name).exists()
    namespaced.run(["rm", "-f", "/etc/hostname"], check=True)
    assert Path("/etc/hostname").exists() or not Path("/etc").joinpath("hostname").is_symlink()


def test_the_repository_and_home_are_not_visible(namespaced: Sandbox) -> None:
    here = Path(__file__).resolve()
    assert here.exists()
    assert not namespaced.exists(str(here))
    # The checkout's top-level directory (unless an image has it too, like /opt), the directory
    # pytest runs in and the host's private ones are empty (or, below an emptied one, absent).
    private = {str(Path.cwd()), "/root", "/tmp", "/home"}
    if here.parts[1] not in IMAGE_ROOT:
        private.add("/" + here.parts[1])
    for path in sorted(p for p in private if Path(p).is_dir()):
        listing = namespaced.run(["sh", "-c", '! test -e "$1" || ls -A "$1"', "sh", path])
        assert (listing.exit_code, listing.stdout) == (0, ""), path


def test_host_processes_are_not_visible(namespaced: Sandbox) -> None:
    processes = namespaced.run(["ps", "-eo", "pid,args"], check=True).stdout
    assert "pytest" not in processes
    assert str(os.getpid()) + " " not in processes.replace("\n", " \n")
    assert namespaced.run(["cat", "/proc/1/cmdline"], check=True).stdout.startswith("sleep")


@pytest.mark.parametrize(
    "command",
    [
        ["mknod", "/tmp/disk", "b", "8", "0"],
        ["mount", "-t", "devtmpfs", "devtmpfs", "/mnt"],
        ["mount", "-t", "proc", "proc", "/mnt"],
        ["mount", "-o", "remount,rw", "/proc/sys"],
        ["sh", "-c", "echo evil > /proc/sys/kernel/hostname"],
        ["sh", "-c", "cat /proc/sys/kernel/core_pattern > /proc/sys/kernel/core_pattern"],
        ["umount", "-l", "/"],
    ],
    ids=["mknod", "devtmpfs", "proc", "remount", "sysctl", "core-pattern", "umount"],
)
def test_root_in_the_sandbox_cannot_reach_the_host(namespaced: Sandbox, command: list[str]) -> None:
    result = namespaced.run(command)
    assert not result.ok, f"{command} succeeded: {result.stdout}{result.stderr}"
    assert any(
        reason in result.stderr
        for reason in (
            "not permitted",
            "permission denied",
            "Permission denied",
            "Read-only",
            "must be superuser",
        )
    ), result.stderr
