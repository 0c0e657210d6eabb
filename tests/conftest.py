"""Fixtures every test folder can use: a Northflank emulator per test session (per xdist worker).

``NF_TEST_EMULATOR_ISOLATION`` (auto, namespace or directory) chooses how the emulators
isolate sandboxes; ``auto`` by default.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import pytest
from hypothesis import settings
from northflank_environment import NF_VARIABLES
from remote_emulator import RemoteEmulator, start_remote_emulator, stop_remote_emulator

if TYPE_CHECKING:
    from pytest_northflank.client import NorthflankClient
    from pytest_northflank.emulator import EmulatorServer
    from pytest_northflank.emulator.runtime import IsolationSetting

pytest_plugins = ["pytester"]

# CI (where CI is set) explores the same examples every run, so a red build always points at a
# change (CI=1 replays it here); elsewhere every run tries new ones.
# No deadlines anywhere: a slow example on a loaded machine is not a failure (timing goals
# live in bench/).
settings.register_profile("local", deadline=None)
settings.register_profile("ci", derandomize=True, database=None, print_blob=True, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "local")


# The suite never asks a public registry for an image: sandboxes use this machine's userland
# in every emulator and pytest run it starts. The image tests serve their own images from a
# registry on 127.0.0.1 and turn images on themselves.
os.environ.setdefault("NF_EMULATOR_IMAGES", "off")


def _start_emulator(**options: Any) -> EmulatorServer:
    from pytest_northflank.emulator import EmulatorServer

    isolation = cast("IsolationSetting", os.environ.get("NF_TEST_EMULATOR_ISOLATION", "auto"))
    return EmulatorServer(isolation=isolation, **options).start()


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorServer]:
    """An emulator shared by the whole session (each xdist worker has its own).

    Tests share its state: give services unique names and delete what you create; don't
    inject faults into it (use ``emulator_clean`` for that)."""
    server = _start_emulator()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _emulator_for_resets() -> Iterator[EmulatorServer]:
    server = _start_emulator()
    yield server
    server.stop()


@pytest.fixture
def emulator_clean(_emulator_for_resets: EmulatorServer) -> EmulatorServer:
    """An emulator reset before the test: no services, tags or faults, default settings.

    A different emulator from ``emulator``, so the reset never disturbs tests that share
    that one. Faults and settings changed by the test are undone by the next reset."""
    _emulator_for_resets.control.reset()
    return _emulator_for_resets


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """None of pytest-northflank's variables set (pytester runs inherit the environment)."""
    for variable in NF_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def client(emulator_clean: EmulatorServer) -> Iterator[NorthflankClient]:
    """Our client on a fresh emulator of this test's own."""
    from pytest_northflank.client import NorthflankClient

    with NorthflankClient(emulator_clean.token, base_url=emulator_clean.url) as api:
        yield api


@pytest.fixture
def remote_emulator() -> Iterator[RemoteEmulator]:
    """A Northflank emulator in its own process, playing the remote API for whole pytest runs."""
    emulator = start_remote_emulator()
    yield emulator
    stop_remote_emulator(emulator)
