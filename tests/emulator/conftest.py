"""Fixtures for the emulator tests (``emulator``, ``emulator_clean``: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from emulator_testing import Api

from pytest_northflank.emulator import EmulatorServer


@pytest.fixture
def api(emulator_clean: EmulatorServer) -> Iterator[Api]:
    """Raw REST access to a freshly reset emulator."""
    with Api(emulator_clean) as client:
        yield client
