"""The emulator's machine-readable info file: written by ``--info-file``, read back
defensively by ``read_info_file``."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_northflank.emulator import EmulatorInfo, read_info_file
from pytest_northflank.emulator.info_file import remove_info_file, write_info_file

GOOD: dict[str, Any] = {
    "url": "http://127.0.0.1:8080",
    "pid": 4242,
    "isolation": "directory",
    "isolation_reason": "directory isolation was requested",
    "token_source": "env",
    "token_env": "NORTHFLANK_EMULATOR_TOKEN",
}


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_a_good_file_reads_back(tmp_path: Path) -> None:
    info = read_info_file(write(tmp_path / "info.json", GOOD))
    assert info == EmulatorInfo(
        url="http://127.0.0.1:8080",
        pid=4242,
        isolation="directory",
        isolation_reason="directory isolation was requested",
        token_source="env",
        token_env="NORTHFLANK_EMULATOR_TOKEN",
    )
    assert read_info_file(str(tmp_path / "info.json")) == info  # a str path works too


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    assert read_info_file(write(tmp_path / "i", {**GOOD, "later": [1]})) is not None


@pytest.mark.parametrize(
    "content",
    [
        "",
        json.dumps(GOOD)[:-5],  # truncated
        "not json",
        "[1, 2]",
        "null",
        "\xff\xfe",
    ],
)
def test_broken_files_read_as_none(tmp_path: Path, content: str) -> None:
    assert read_info_file(write(tmp_path / "info.json", content)) is None


@pytest.mark.parametrize(
    "change",
    [
        {"url": 8080},
        {"url": "127.0.0.1:8080"},
        {"pid": "4242"},
        {"pid": True},
        {"pid": 0},
        {"pid": 1.5},
        {"isolation": None},
        {"isolation": ""},
        {"isolation_reason": 3},
        {"token_source": "magic"},
        {"token_env": 7},
        {"token_env": None},  # env without the variable's name
        {"token_source": "argument"},  # with a token_env that does not apply
        {"token_source": "generated", "token_env": None},  # generated without the token
        {"token": ""},
    ],
)
def test_wrong_types_read_as_none(tmp_path: Path, change: dict[str, Any]) -> None:
    data = {**GOOD, **change}
    assert read_info_file(write(tmp_path / "info.json", data)) is None


def test_missing_files_and_fields_read_as_none(tmp_path: Path) -> None:
    assert read_info_file(tmp_path / "absent.json") is None
    assert read_info_file(tmp_path) is None  # a directory
    for key in ("url", "pid", "isolation", "isolation_reason", "token_source"):
        data = {k: v for k, v in GOOD.items() if k != key}
        assert read_info_file(write(tmp_path / f"no-{key}", data)) is None


def test_writing_is_atomic_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "info.json"
    write(path, "old")
    info = EmulatorInfo("http://[::1]:9", 77, "namespace", "why", "generated", token="s3cret")
    write_info_file(path, info)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_info_file(path) == info
    assert json.loads(path.read_text())["token"] == "s3cret"
    assert [p.name for p in tmp_path.iterdir()] == ["info.json"]  # no temporary left
    assert "s3cret" not in repr(info)


def test_removal_leaves_another_emulators_file(tmp_path: Path) -> None:
    path = tmp_path / "info.json"
    write_info_file(path, EmulatorInfo("http://h:1", 77, "directory", "", "argument"))
    remove_info_file(path, 78)
    assert path.exists()
    remove_info_file(path, 77)
    assert not path.exists()
    remove_info_file(path, 77)  # already gone: fine


def serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "pytest_northflank.emulator", "--isolation", "directory",
            "--state-dir", str(tmp_path / "state"), *args]  # fmt: skip
    base = {k: v for k, v in os.environ.items() if k != "NORTHFLANK_EMULATOR_TOKEN"}
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**base, **(env or {})}
    )


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err


@pytest.mark.parametrize("how", ["env", "argument", "generated"])
def test_the_command_writes_the_info_file_and_removes_it(tmp_path: Path, how: str) -> None:
    path = tmp_path / "emulator.json"
    args = ["--info-file", str(path)]
    env = {}
    if how == "env":
        env["NORTHFLANK_EMULATOR_TOKEN"] = "env-token"
    elif how == "argument":
        args += ["--token", "arg-token"]
    process = serve(tmp_path, *args, env=env)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().rpartition(" ")[2]
        info = read_info_file(path)  # written before the banner
        assert info is not None
        assert (info.url, info.pid, info.isolation) == (url, process.pid, "directory")
        assert info.isolation_reason == "directory isolation was requested"
        assert info.token_source == how
        assert info.token_env == ("NORTHFLANK_EMULATOR_TOKEN" if how == "env" else None)
        text = path.read_text()
        assert "env-token" not in text
        assert "arg-token" not in text
        if how == "generated":
            assert info.token is not None
            assert info.token.startswith("nf-emulator-")
        else:
            assert info.token is None
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        stop(process)
    assert not path.exists()


def test_an_unwritable_info_file_is_an_error(tmp_path: Path) -> None:
    process = serve(tmp_path, "--info-file", str(tmp_path / "no-such-dir" / "info.json"))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "cannot write the info file" in err
