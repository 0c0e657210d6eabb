"""Against the real Northflank API: opt-in, skipped unless NORTHFLANK_API_TOKEN is set.

Also needs NORTHFLANK_PROJECT_ID; NORTHFLANK_TAGS (space-separated, e.g. ``spot-workload``)
for spot-only clusters. Creates one small service and deletes it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pytest_northflank.client import NorthflankClient
from pytest_northflank.client.models import DeploymentServiceSpec
from pytest_northflank.run.ownership import Ownership, new_run_id

TOKEN = os.environ.get("NORTHFLANK_API_TOKEN", "")
PROJECT = os.environ.get("NORTHFLANK_PROJECT_ID", "")

pytestmark = pytest.mark.skipif(
    not (TOKEN and PROJECT),
    reason="live API tests need NORTHFLANK_API_TOKEN and NORTHFLANK_PROJECT_ID",
)


@pytest.fixture
def client() -> Iterator[NorthflankClient]:
    base_url = os.environ.get("NORTHFLANK_API_BASE_URL", "https://api.northflank.com")
    with NorthflankClient(TOKEN, base_url=base_url) as live:
        yield live


def test_the_project_is_visible(client: NorthflankClient) -> None:
    assert PROJECT in {project.id for project in client.list_projects()}


def test_a_sandbox_runs_a_command_and_is_deleted(client: NorthflankClient) -> None:
    from datetime import datetime, timezone

    owner = Ownership(new_run_id(), "master")
    spec = DeploymentServiceSpec(
        name=owner.service_name(1, "live"),
        command="sleep infinity",
        tags=os.environ.get("NORTHFLANK_TAGS", "").split(),
        description=owner.description(datetime.now(timezone.utc)),
    )
    service = client.create_deployment_service(PROJECT, spec)
    try:
        client.wait_for_service_ready(PROJECT, service.id, timeout=300)
        result = client.run(PROJECT, service.id, ["echo", "hello"])
        assert (result.exit_code, result.stdout) == (0, b"hello\n")
    finally:
        client.delete_service(PROJECT, service.id)
