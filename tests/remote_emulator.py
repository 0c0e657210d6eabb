"""Helpers for whole-run tests: an emulator in its own process playing the remote API."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pytest_northflank.client import NorthflankClient
from pytest_northflank.emulator import EmulatorControl

PROJECT = "default-project"


@dataclass
class RemoteEmulator:
    url: str
    token: str
    process: subprocess.Popen[str]

    @property
    def control(self) -> EmulatorControl:
        return EmulatorControl(self.url, self.token)

    def service_names(self) -> set[str]:
        with NorthflankClient(self.token, base_url=self.url) as client:
            return {service.name for service in client.list_services(PROJECT)}

    def run_services(self, run_id: str) -> set[str]:
        return {name for name in self.service_names() if name.startswith(f"nft-{run_id}-")}

    def env(self) -> dict[str, str]:
        """The environment of a pytest run using this emulator as its Northflank API."""
        env = dict(os.environ)
        env.update(
            NORTHFLANK_API_TOKEN=self.token,
            NORTHFLANK_API_BASE_URL=self.url,
            NORTHFLANK_PROJECT_ID=PROJECT,
            PYTHONUNBUFFERED="1",
        )
        env.pop("PYTEST_XDIST_WORKER", None)
        env.pop("PYTEST_ADDOPTS", None)
        return env


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def write_suite(path: Path, body: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "test_suite.py").write_text(body)
    return path


def start_remote_emulator() -> RemoteEmulator:
    token = "emu-" + secrets.token_hex(8)
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest_northflank.emulator", "--port", "0", "--token", token],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    url = first.rsplit(" ", 1)[-1].strip()
    assert url.startswith("http://127.0.0.1:"), first
    return RemoteEmulator(url=url, token=token, process=process)


def stop_remote_emulator(emulator: RemoteEmulator) -> None:
    emulator.process.terminate()
    emulator.process.wait(30)
    if emulator.process.stdout is not None:
        emulator.process.stdout.close()
