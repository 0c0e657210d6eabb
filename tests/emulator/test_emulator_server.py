"""EmulatorServer's lifecycle, the command line, and what sandboxes can and cannot see."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from emulator_testing import Api, eventually, exec_socket, init_frame, run_exec, send, unique_name

from pytest_northflank.emulator import EmulatorServer
from pytest_northflank.emulator.runtime import probe_namespaces
from pytest_northflank.errors import EmulatorError

NAMESPACES, WHY_NOT = probe_namespaces()
needs_namespaces = pytest.mark.skipif(not NAMESPACES, reason=f"no namespaces here: {WHY_NOT}")


def accepts(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def all_dead(processes: list[psutil.Process]) -> bool:
    return all(
        not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
        for process in processes
    )


def mounts_mentioning(text: str) -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if text in line]


# -- EmulatorServer ----------------------------------------------------------------------------


def test_start_serves_at_once_and_stop_leaves_nothing(tmp_path: Path) -> None:
    threads_before = set(threading.enumerate())
    server = EmulatorServer(isolation="directory", state_dir=tmp_path / "state")
    with pytest.raises(EmulatorError, match="not started"):
        _ = server.url
    server.start()
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
        assert accepts(server.url)
        assert server.token.startswith("nf-emulator-")
        assert server.token not in repr(server)
        assert (server.isolation, server.isolation_reason) == (
            "directory",
            "directory isolation was requested",
        )
        with Api(server) as api:
            started = api.start("lifecycle", "sh -c 'sleep 600 & sleep infinity'")
        (container,) = server.runtime.containers()
        family = [psutil.Process(container.pid), *psutil.Process(container.pid).children(True)]
        with pytest.raises(EmulatorError, match="already started"):
            server.start()
    finally:
        server.stop()
    assert not accepts(server.url)
    assert all_dead(family)
    assert [t for t in threading.enumerate() if t not in threads_before] == []
    assert list((tmp_path / "state").iterdir()) == []
    server.stop()  # idempotent
    assert started["id"] == "lifecycle"


def test_stop_does_not_wait_for_open_sessions() -> None:
    with EmulatorServer(isolation="directory") as server, Api(server) as api:
        service = api.start("busy")
        with exec_socket(server, service["id"]) as ws:
            send(ws, init_frame(server.token, command=["sleep", "600"]))
            assert json.loads(ws.recv(timeout=30))["type"] == "init"
            (container,) = server.runtime.containers()
            family = [psutil.Process(container.pid)]
            server.stop()
            with pytest.raises(Exception):  # noqa: B017, PT011 -- the server went away
                ws.recv(timeout=30)
    assert all_dead(family)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"project_ids": "default-project"}, "not one string"),
        ({"project_ids": ()}, "project_ids must be non-empty strings"),
        ({"ready_delay": -1}, "ready_delay must be a finite number >= 0"),
        ({"rate_limit_per_hour": -5}, "rate_limit_per_hour"),
        ({"token": "has space"}, "token must be"),
        ({"isolation": "vm"}, "isolation must be"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(EmulatorError, match=message):
        EmulatorServer(**options).start()  # type: ignore[arg-type]


def test_a_busy_port_is_a_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(EmulatorError, match=f"cannot listen on 127.0.0.1:{port}"):
            EmulatorServer(port=port, isolation="directory").start()


def test_a_given_token_and_ready_delay(emulator: EmulatorServer) -> None:
    with (
        EmulatorServer(token="my-token", ready_delay=30, isolation="directory") as server,
        Api(server) as api,
    ):
        assert server.token == "my-token"
        created = api.create("delayed")
        assert api.get(created["id"])["status"]["deployment"]["status"] == "PENDING"


# -- isolation ----------------------------------------------------------------------------------


@pytest.fixture
def two_sandboxes(emulator: EmulatorServer) -> Iterator[tuple[str, str]]:
    if emulator.isolation != "namespace":
        pytest.skip(f"the session emulator uses {emulator.isolation} isolation")
    with Api(emulator) as api:
        first = api.start(unique_name("iso-a"))["id"]
        second = api.start(unique_name("iso-b"))["id"]
        yield first, second
        api.delete(first)
        api.delete(second)


def sh(emulator: EmulatorServer, service_id: str, script: str) -> tuple[int, str]:
    result = run_exec(emulator, service_id, command=["sh", "-c", script])
    return result.completion["exitCode"], result.text() + result.text("stdErr")


@needs_namespaces
def test_sandboxes_do_not_see_each_others_files_or_processes(
    emulator: EmulatorServer, two_sandboxes: tuple[str, str]
) -> None:
    first, second = two_sandboxes
    marker = f"only-in-{first}"
    assert sh(emulator, first, f"echo {marker} > /tmp/mine; echo x > /root/mine")[0] == 0
    assert sh(emulator, first, "cat /tmp/mine") == (0, f"{marker}\n")
    code, output = sh(emulator, second, "cat /tmp/mine /root/mine")
    assert code != 0
    assert "No such file or directory" in output

    with exec_socket(emulator, first) as ws:
        send(ws, init_frame(emulator.token, command=["sleep", "4242"]))
        assert json.loads(ws.recv(timeout=30))["type"] == "init"
        assert eventually(
            lambda: "sleep 4242" in sh(emulator, first, "ps -eo args")[1],
            timeout=15.0,
            interval=0.05,
        )
        assert "sleep 4242" not in sh(emulator, second, "ps -eo args")[1]
        assert sh(emulator, first, "echo $$")[1] != "1\n"
        assert sh(emulator, first, "cat /proc/1/cmdline | tr '\\0' ' '")[1] == "sleep infinity "


@needs_namespaces
def test_writes_to_etc_stay_in_the_sandbox(
    emulator: EmulatorServer, two_sandboxes: tuple[str, str], tmp_path: Path
) -> None:
    first, second = two_sandboxes
    name = f"nf-emulator-test-{os.getpid()}-{time.monotonic_ns()}"
    assert sh(emulator, first, f"echo inside > /etc/{name} && cat /etc/{name}") == (0, "inside\n")
    assert not Path(f"/etc/{name}").exists()
    assert sh(emulator, second, f"test -e /etc/{name}")[0] == 1
    host_file = tmp_path / "host-only"
    host_file.write_text("host")
    # The host's temporary and workspace directories are masked inside.
    assert sh(emulator, first, f"test -e {host_file}")[0] == 1


# -- the command line ---------------------------------------------------------------------------


class CliEmulator:
    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.state_dir = tmp_path / "cli-state"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pytest_northflank.emulator", "--host", "127.0.0.1",
             "--port", "0", "--token", "cli-token", "--ready-delay", "0",
             "--state-dir", str(self.state_dir), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        match = re.fullmatch(r"Northflank emulator listening on (http://127\.0\.0\.1:\d+)\n", first)
        assert match, first + self.process.stderr.read() if self.process.stderr else first
        self.url = match.group(1)
        self.header = self.process.stdout.readline()

    def finish(self) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=60)
        return self.process.returncode, out, err


def start_sandboxes(url: str, count: int) -> list[psutil.Process]:
    """Create ``count`` services whose main processes fork a child; their processes."""
    with Api(url, "cli-token") as api:
        for n in range(count):
            api.start(f"cli sandbox {n}", "sh -c 'sleep 777 & sleep infinity'")
    with httpx.Client(headers={"Authorization": "Bearer cli-token"}) as http:
        state = http.get(f"{url}/_emulator/state").json()["data"]
    processes = []
    for container in state["containers"]:
        main = psutil.Process(container["pid"])
        processes += [main, *main.children(recursive=True)]
    assert len(processes) >= 2 * count
    return processes


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_the_command_serves_until_a_signal_then_stops_every_sandbox(
    tmp_path: Path, how: str
) -> None:
    cli = CliEmulator(tmp_path)
    try:
        assert cli.header.startswith("isolation: ")
        processes = start_sandboxes(cli.url, 2)
    finally:
        cli.process.send_signal(getattr(signal, how))
        code, out, err = cli.finish()
    assert code == 0, err
    assert "every sandbox is gone" in out
    assert "cli-token" not in out + err + cli.header
    assert all_dead(processes)
    assert not accepts(cli.url)
    assert mounts_mentioning(str(tmp_path)) == []
    assert list(cli.state_dir.iterdir()) == []


def test_a_sigkilled_emulator_leaves_no_process_or_mount(tmp_path: Path) -> None:
    cli = CliEmulator(tmp_path)
    try:
        processes = start_sandboxes(cli.url, 2)
    finally:
        cli.process.kill()
        cli.finish()
    assert eventually(lambda: all_dead(processes), timeout=15.0, interval=0.05)
    assert mounts_mentioning(str(tmp_path)) == []


def test_the_command_prints_a_generated_token_and_refuses_bad_options(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NORTHFLANK_EMULATOR_TOKEN"}
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest_northflank.emulator", "--isolation", "directory",
         "--state-dir", str(tmp_path / "s")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(3)]
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert lines[1] == "isolation: directory (directory isolation was requested)\n"
    token = lines[2].removeprefix("token (generated): ").strip()
    assert token.startswith("nf-emulator-")

    bad = subprocess.run(
        [sys.executable, "-m", "pytest_northflank.emulator", "--ready-delay", "-1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "--ready-delay: must be a finite number >= 0" in bad.stderr


def test_spot_only_starts_with_the_spot_tag(tmp_path: Path) -> None:
    cli = CliEmulator(tmp_path, "--spot-only", "--isolation", "directory")
    try:
        with httpx.Client(headers={"Authorization": "Bearer cli-token"}) as http:
            tags = http.get(f"{cli.url}/v1/tags").json()["data"]["tags"]
            cluster = http.get(f"{cli.url}/_emulator/state").json()["data"]["cluster"]
    finally:
        cli.process.send_signal(signal.SIGTERM)
        code, _, err = cli.finish()
    assert code == 0, err
    assert [(tag["name"], tag["useSpotNodes"]) for tag in tags] == [("spot-workload", True)]
    assert cluster["spotOnly"] is True


def test_the_emulator_never_imports_the_client() -> None:
    script = (
        "import sys\n"
        "import pytest_northflank.emulator.__main__, pytest_northflank.emulator.server\n"
        "import pytest_northflank.emulator.control_client\n"
        "bad = [m for m in sys.modules if m.startswith('pytest_northflank.client')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
