"""Fixtures of the reliability suite: hostile input, faults, fuzzing, secrets and the
emulator's own boundary. ``emulator`` and ``emulator_clean`` come from tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from reliability_helpers import make_sandbox, point_at

from pytest_northflank.client import NorthflankClient

if TYPE_CHECKING:
    from pytest_northflank.emulator import EmulatorServer
    from pytest_northflank.sandbox import Sandbox


@pytest.fixture(autouse=True)
def _no_northflank_environment(clean_environment: None) -> None:
    """pytester runs inherit the environment: start every test from none of our variables."""


@pytest.fixture
def remote(emulator_clean: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    """A freshly reset emulator playing the remote Northflank API for pytester runs (token,
    URL and project in the environment), so a test can inject faults and then check that
    the run left no service behind."""
    point_at(monkeypatch, emulator_clean)
    return emulator_clean


@pytest.fixture(scope="session")
def client(emulator: EmulatorServer) -> Iterator[NorthflankClient]:
    """Our client on the session's shared emulator."""
    with NorthflankClient(emulator.token, base_url=emulator.url) as nf:
        yield nf


@pytest.fixture(scope="module")
def sandbox(client: NorthflankClient) -> Iterator[Sandbox]:
    """A ready sandbox shared by one module (made without the plugin), deleted after it."""
    made = make_sandbox(client)
    yield made
    made.delete()
