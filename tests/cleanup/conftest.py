"""A Northflank emulator in its own process, playing the remote API for whole pytest runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from remote_emulator import RemoteEmulator, start_remote_emulator, stop_remote_emulator


@pytest.fixture
def remote_emulator() -> Iterator[RemoteEmulator]:
    emulator = start_remote_emulator()
    yield emulator
    stop_remote_emulator(emulator)
