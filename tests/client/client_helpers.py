"""Shared helpers for the client tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import secrets
from typing import Any

from pytest_northflank.client import DeploymentServiceSpec, NorthflankClient, Service

PROJECT = "default-project"


def unique_name(prefix: str) -> str:
    """A valid, unique service or tag name starting with ``prefix``."""
    return f"{prefix}-{secrets.token_hex(3)}"


def start_service(nf: NorthflankClient, prefix: str, **spec: Any) -> Service:
    """Create a service (``sleep infinity`` unless told) and wait until it is ready."""
    spec.setdefault("command", "sleep infinity")
    service = nf.create_deployment_service(
        PROJECT, DeploymentServiceSpec(name=unique_name(prefix), **spec)
    )
    return nf.wait_for_service_ready(PROJECT, service.id, timeout=60, poll_interval=0.05)
