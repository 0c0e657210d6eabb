"""Shared helpers for the reliability suite (imported by name: pytest puts this folder on
sys.path)."""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING, Any

import pytest
from northflank_environment import NF_VARIABLES

from pytest_northflank.client import DeploymentServiceSpec, NorthflankClient
from pytest_northflank.config.settings import SandboxOptions
from pytest_northflank.sandbox import Sandbox

if TYPE_CHECKING:
    from pytest_northflank.emulator import EmulatorServer

PROJECT = "default-project"


def run_pytest(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """A pytest run in a subprocess (the plugin starts threads, processes and namespaces)."""
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def output(result: pytest.RunResult) -> str:
    return result.stdout.str() + "\n" + result.stderr.str()


def error_text(result: pytest.RunResult) -> str:
    """The exception lines pytest printed (``E   ...``), without the prefix."""
    return "\n".join(line[1:].strip() for line in result.stdout.lines if line.startswith("E "))


def services_left(server: EmulatorServer) -> list[str]:
    """Names of the services the emulator still holds; containers still running count too."""
    state = server.control.state()
    names = [service["name"] for service in state["services"]]
    running = [c["sandboxId"] for c in state["containers"] if c["running"]]
    return names + running


def unique_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def make_sandbox(
    client: NorthflankClient, *, env: dict[str, str] | None = None, **spec: Any
) -> Sandbox:
    """A ready sandbox on ``client``'s emulator, made without the plugin (delete it after)."""
    spec.setdefault("command", "sleep infinity")
    options = SandboxOptions(env=env or {}, command=spec["command"])
    service = client.create_deployment_service(
        PROJECT,
        DeploymentServiceSpec(name=unique_name("rel"), env=env or {}, **spec),
    )
    client.wait_for_service_ready(PROJECT, service.id, timeout=60, poll_interval=0.05)

    def delete(sandbox: Sandbox) -> None:
        client.delete_service(PROJECT, sandbox.id)
        sandbox.deleted = True

    return Sandbox(
        client,
        project_id=PROJECT,
        service_id=service.id,
        name=service.name,
        options=options,
        dashboard_url=f"{client.base_url}/v1/projects/{PROJECT}/services/{service.id}",
        deleter=delete,
    )


def point_at(
    monkeypatch: pytest.MonkeyPatch, server: EmulatorServer, token: str | None = None
) -> None:
    """Make pytester runs use ``server`` as the remote Northflank API (the real backend)."""
    monkeypatch.setenv("NORTHFLANK_API_TOKEN", token or server.token)
    monkeypatch.setenv("NORTHFLANK_API_BASE_URL", server.url)
    monkeypatch.setenv("NORTHFLANK_PROJECT_ID", PROJECT)


def environ_without_nf() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in NF_VARIABLES}
