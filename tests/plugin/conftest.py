"""Fixtures shared by the plugin tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from pytest_northflank.client import NorthflankClient

if TYPE_CHECKING:
    from pytest_northflank.emulator import EmulatorServer


@pytest.fixture
def client(emulator_clean: EmulatorServer) -> Iterator[NorthflankClient]:
    """Our client on a fresh emulator of this test's own."""
    with NorthflankClient(emulator_clean.token, base_url=emulator_clean.url) as api:
        yield api
