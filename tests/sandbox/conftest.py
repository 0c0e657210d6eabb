"""Sandboxes on a real emulator, in both isolation modes where the machine allows them."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from pytest_northflank.client import DeploymentServiceSpec, NorthflankClient
from pytest_northflank.config.settings import SandboxOptions
from pytest_northflank.emulator import EmulatorServer
from pytest_northflank.emulator.runtime import probe_namespaces
from pytest_northflank.sandbox import Sandbox

if TYPE_CHECKING:
    from pytest_northflank.emulator.runtime import IsolationMode

PROJECT = "default-project"


def _modes() -> list[IsolationMode]:
    return ["namespace", "directory"] if probe_namespaces()[0] else ["directory"]


@pytest.fixture(scope="module", params=_modes())
def isolated_client(request: pytest.FixtureRequest) -> Iterator[NorthflankClient]:
    """Our client on an emulator of each isolation mode (one per module and mode)."""
    with (
        EmulatorServer(isolation=request.param) as server,
        NorthflankClient(server.token, base_url=server.url) as client,
    ):
        yield client


def make_sandbox(client: NorthflankClient, command: str = "sleep infinity") -> Sandbox:
    name = f"proc-{secrets.token_hex(3)}"
    service = client.create_deployment_service(
        PROJECT, DeploymentServiceSpec(name=name, command=command)
    )
    client.wait_for_service_ready(PROJECT, service.id, timeout=60, poll_interval=0.05)

    def delete(sandbox: Sandbox) -> None:
        sandbox.stop_processes()
        client.delete_service(PROJECT, sandbox.id)
        sandbox.deleted = True

    return Sandbox(
        client,
        project_id=PROJECT,
        service_id=service.id,
        name=name,
        options=SandboxOptions(command=command),
        dashboard_url="",
        deleter=delete,
    )


@pytest.fixture
def new_sandbox(isolated_client: NorthflankClient) -> Callable[[], Sandbox]:
    """Makes a sandbox the test deletes itself."""
    return lambda: make_sandbox(isolated_client)


@pytest.fixture
def sandbox(isolated_client: NorthflankClient) -> Iterator[Sandbox]:
    made = make_sandbox(isolated_client)
    yield made
    made.delete()
