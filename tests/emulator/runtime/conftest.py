"""Fixtures for the container runtime tests: ``isolation`` (each mode that works here) and
``harness`` (a runtime that must leave nothing behind)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from emulator_testing import eventually
from runtime_testing import (
    ISOLATIONS,
    Harness,
    marked_processes,
)

from pytest_northflank.emulator.runtime import (
    ContainerRuntime,
)


@pytest.fixture(params=ISOLATIONS)
def isolation(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def harness(isolation: str, tmp_path: Path) -> Iterator[Harness]:
    runtime = ContainerRuntime(isolation, state_dir=tmp_path / "state")  # type: ignore[arg-type]
    assert runtime.isolation == isolation
    marker = uuid.uuid4().hex
    try:
        yield Harness(runtime, marker)
    finally:
        runtime.shutdown()
    assert eventually(lambda: not marked_processes(marker)), marked_processes(marker)
    assert not list((tmp_path / "state").iterdir())
