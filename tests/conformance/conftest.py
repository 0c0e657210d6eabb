"""Fixtures for running the official Northflank Python SDK (unchanged) against the emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from northflank import ApiClient
from sdk_testing import PROJECT, deployment, sdk_for, unique_name

from pytest_northflank.emulator import EmulatorServer


@pytest.fixture(scope="session")
def sdk(emulator: EmulatorServer) -> ApiClient:
    """The official SDK pointed at the session's emulator."""
    return sdk_for(emulator)


@pytest.fixture
def sdk_clean(emulator_clean: EmulatorServer) -> ApiClient:
    """The official SDK pointed at a freshly reset emulator."""
    return sdk_for(emulator_clean)


@pytest.fixture
def ready_service(sdk: ApiClient) -> Iterator[Callable[..., str]]:
    """Create services through the SDK and wait until ready; deleted after the test."""
    created: list[str] = []

    def factory(prefix: str, command: str = "sleep infinity", **extra: Any) -> str:
        body = deployment(unique_name(prefix), command, **extra)
        service_id = str(sdk.create.service.deployment(project_id=PROJECT, data=body).data["id"])
        created.append(service_id)
        sdk.helpers.wait_for_service_ready(
            project_id=PROJECT, service_id=service_id, timeout_s=60, poll_interval_s=0.05
        )
        return service_id

    yield factory
    for service_id in created:
        sdk.delete.service(project_id=PROJECT, service_id=service_id, delete_child_objects=True)
