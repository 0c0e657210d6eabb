"""The emulator against odd input and rough ends: NaN, infinite or negative ready delays are
refused (command line, ``EmulatorServer``, control plane); a short token off loopback is
warned about; SIGTERM removes its state directory and cgroups; what a SIGKILLed emulator left
is reclaimed by the next one, and nothing of a live emulator or another user is touched."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import httpx
import pytest
from emulator_testing import Api, eventually

from pytest_northflank.emulator import EmulatorServer, read_info_file
from pytest_northflank.emulator.__main__ import build_parser
from pytest_northflank.emulator.runtime import ContainerRuntime
from pytest_northflank.emulator.runtime.limits import LimitEnforcer
from pytest_northflank.emulator.runtime.owners import owner_name
from pytest_northflank.emulator.runtime.state_dirs import OWNER_FILE, STATE_DIR_PREFIX
from pytest_northflank.emulator.server import EmulatorExposureWarning
from pytest_northflank.errors import EmulatorError

ODD_DELAYS = ["nan", "inf", "-inf", "1e400", "-1"]


def cgroup_bases() -> list[Path]:
    enforcer = LimitEnforcer()
    enforcer.close()
    return enforcer.bases


# -- ready delays --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ODD_DELAYS)
def test_the_command_refuses_an_odd_ready_delay(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([f"--ready-delay={text}"])
    assert exited.value.code == 2
    assert f"--ready-delay: must be a finite number >= 0, got {text}" in capsys.readouterr().err


@pytest.mark.parametrize("delay", [float("nan"), float("inf"), -1.0, True, "1"])
def test_the_server_refuses_an_odd_ready_delay(delay: object) -> None:
    with pytest.raises(EmulatorError, match="ready_delay must be a finite number >= 0"):
        EmulatorServer(ready_delay=delay)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e400", "-0.5"])
def test_the_control_plane_refuses_an_odd_ready_delay(
    emulator_clean: EmulatorServer, raw: str
) -> None:
    with httpx.Client(headers={"Authorization": f"Bearer {emulator_clean.token}"}) as http:
        response = http.post(
            f"{emulator_clean.url}/_emulator/faults/readiness",
            content=f'{{"delay": {raw}}}',
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 400, response.text
    assert "delay must be a finite number >= 0" in response.text
    assert emulator_clean.state.faults.ready_delay == 0.0


# -- exposure ------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "", "ci-runner.example"])
def test_a_short_token_off_loopback_is_warned_about(host: str) -> None:
    with pytest.warns(EmulatorExposureWarning, match="15-character token") as caught:
        EmulatorServer(host=host, token="t" * 15)
    assert "t" * 15 not in str(caught[0].message)  # the token itself is never shown


@pytest.mark.parametrize(
    ("host", "token"),
    [("127.0.0.1", "t"), ("::1", "t"), ("localhost", "t"), ("0.0.0.0", "t" * 16), ("::", None)],
)
def test_no_warning_on_loopback_or_with_a_long_token(host: str, token: str | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EmulatorServer(host=host, token=token)


def test_the_command_warns_before_it_listens(tmp_path: Path) -> None:
    # The port is taken on loopback, so binding every interface fails: nothing is exposed.
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "pytest_northflank.emulator", "--host", "0.0.0.0",
             "--port", str(port), "--token", "weak", "--isolation", "directory",
             "--state-dir", str(tmp_path / "state")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith(
        "warning: the emulator listens on 0.0.0.0 (not loopback) with a 4-character token"
    ), done.stderr
    assert "weak" not in done.stderr


# -- state directories ---------------------------------------------------------------------------


class Cli:
    """``python -m pytest_northflank.emulator`` with its temporary directory in ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.info = tmp.parent / f"info-{len(list(tmp.parent.iterdir()))}.json"
        env = {k: v for k, v in os.environ.items() if k != "NORTHFLANK_EMULATOR_TOKEN"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pytest_northflank.emulator", "--token", "odd-input-token",
             "--info-file", str(self.info)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**env, "TMPDIR": str(tmp)},
        )  # fmt: skip
        assert eventually(self.info.exists, timeout=60), self.finish()
        info = read_info_file(self.info)
        assert info is not None
        self.url = info.url
        self.owner = owner_name(self.process.pid)

    def start_sandbox(self) -> None:
        with Api(self.url, "odd-input-token") as api:
            api.start("odd-input")

    def finish(self) -> str:
        _, err = self.process.communicate(timeout=60)
        return err


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    directory = tmp_path / "tmp"
    directory.mkdir()
    return directory


def state_dirs(tmp: Path) -> list[Path]:
    return sorted(tmp.glob(STATE_DIR_PREFIX + "*"))


def test_sigterm_removes_the_state_directory_and_cgroups(tmp: Path) -> None:
    cli = Cli(tmp)
    try:
        cli.start_sandbox()
        [state] = state_dirs(tmp)
        assert (state / OWNER_FILE).read_text() == cli.owner
        assert len([p for p in state.iterdir() if p.is_dir()]) == 1  # the sandbox's
        assert all((base / cli.owner).is_dir() for base in cgroup_bases())
    finally:
        cli.process.send_signal(signal.SIGTERM)
        err = cli.finish()
    assert cli.process.returncode == 0, err
    assert state_dirs(tmp) == []
    assert not any((base / cli.owner).exists() for base in cgroup_bases())


def test_what_a_sigkilled_emulator_left_is_reclaimed_by_the_next(tmp: Path) -> None:
    killed = Cli(tmp)
    try:
        killed.start_sandbox()
        groups = [base / killed.owner for base in cgroup_bases()]  # (which reclaims stale ones)
    finally:
        killed.process.kill()
        killed.finish()
    [left] = state_dirs(tmp)
    assert (left / OWNER_FILE).read_text() == killed.owner
    assert all(group.is_dir() for group in groups)
    live = Cli(tmp)  # a running emulator's directory is never taken
    try:
        assert not left.exists()
        assert not any(group.exists() for group in groups)
        assert len(state_dirs(tmp)) == 1
    finally:
        live.process.send_signal(signal.SIGTERM)
        live.finish()
    assert state_dirs(tmp) == []


def test_stale_sandbox_directories_in_a_given_state_dir_are_reclaimed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    dead = subprocess.Popen(["sleep", "60"])
    dead_owner = owner_name(dead.pid)
    dead.kill()
    dead.wait()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        cases = {
            "dead": dead_owner,
            "alive": owner_name(alive.pid),
            "unmarked": None,
            "other-user": dead_owner,
            "garbage": "not an owner",
        }
        for name, owner in cases.items():
            (state / name / "home").mkdir(parents=True)
            if owner is not None:
                (state / name / OWNER_FILE).write_text(owner)
        os.chown(state / "other-user", 4242, 4242)
        (state / "link").symlink_to(state / "dead")
        ContainerRuntime("directory", state_dir=state).shutdown()
        assert sorted(p.name for p in state.iterdir()) == [
            "alive", "garbage", "link", "other-user", "unmarked",
        ]  # fmt: skip
    finally:
        alive.kill()
        alive.wait()
