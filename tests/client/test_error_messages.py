"""Error messages a person reads: what the server said, once."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pytest_northflank.client import NorthflankClient
from pytest_northflank.client.models import DeploymentServiceSpec
from pytest_northflank.errors import ApiValidationError

if TYPE_CHECKING:
    from pytest_northflank.emulator import EmulatorServer


def test_a_refused_plan_is_explained_once(emulator: EmulatorServer) -> None:
    spec = DeploymentServiceSpec(name="plan-once", plan="nf-compute-9999")
    with (
        NorthflankClient(emulator.token, base_url=emulator.url) as client,
        pytest.raises(ApiValidationError) as refused,
    ):
        client.create_deployment_service("default-project", spec)
    message = str(refused.value)
    assert "'nf-compute-9999' is not a deployment plan; the plans are nf-compute-10," in message
    assert message.count("is not a deployment plan") == 1
