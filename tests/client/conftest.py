"""Fixtures for client tests against the emulator (``emulator`` comes from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from client_helpers import PROJECT, start_service

from pytest_northflank.client import NorthflankClient, Service


@pytest.fixture(scope="session")
def nf(emulator: Any) -> Iterator[NorthflankClient]:
    """Our client, pointed at the session's emulator."""
    with NorthflankClient(emulator.token, base_url=emulator.url) as client:
        yield client


@pytest.fixture
def nf_clean(emulator_clean: Any) -> Iterator[NorthflankClient]:
    """Our client on the emulator reset for this test: the place for fault injection."""
    with NorthflankClient(emulator_clean.token, base_url=emulator_clean.url) as client:
        yield client


@pytest.fixture(scope="module")
def service(nf: NorthflankClient, request: pytest.FixtureRequest) -> Iterator[Service]:
    """A running service (``sleep infinity``) shared by one test module, deleted after it."""
    prefix = request.module.__name__.rsplit(".", 1)[-1].replace("_", "-").removeprefix("test-")
    started = start_service(nf, f"c-{prefix[:30]}")
    yield started
    nf.delete_service(PROJECT, started.id)


@pytest.fixture
def service_factory(nf: NorthflankClient) -> Iterator[Callable[..., Service]]:
    """Start services with a custom spec; all are deleted after the test."""
    created: list[Service] = []

    def factory(prefix: str = "c-custom", **spec: Any) -> Service:
        started = start_service(nf, prefix, **spec)
        created.append(started)
        return started

    yield factory
    for started in created:
        nf.delete_service(PROJECT, started.id)
