"""healthChecks on the emulator: validated, and the readiness probe decides COMPLETED."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from pytest_northflank.client import DeploymentServiceSpec, NorthflankClient
from pytest_northflank.errors import ApiValidationError

PROJECT = "default-project"


def readiness(**fields: Any) -> dict[str, Any]:
    return {
        "type": "readinessProbe",
        "initialDelaySeconds": 1,
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
        **fields,
    }


def status_after(client: NorthflankClient, service_id: str, seconds: float) -> str | None:
    deadline = time.monotonic() + seconds
    status = None
    while time.monotonic() < deadline:
        status = client.get_service(PROJECT, service_id).deployment_status
        time.sleep(0.1)
    return status


def test_the_readiness_probe_holds_completed_until_it_passes(client: NorthflankClient) -> None:
    # A name of its own: directory isolation shares the host's /tmp.
    marker = f"/tmp/nf-ready-{uuid.uuid4().hex}"
    spec = DeploymentServiceSpec(
        name="probed",
        command="sleep infinity",
        health_checks=[readiness(protocol="CMD", cmd=f"test -e {marker}")],
    )
    service = client.create_deployment_service(PROJECT, spec)
    assert status_after(client, service.id, 1.0) == "IN_PROGRESS"
    client.run(PROJECT, service.id, ["touch", marker])
    client.wait_for_service_ready(PROJECT, service.id, timeout=30, poll_interval=0.05)
    assert client.get_service(PROJECT, service.id).deployment_status == "COMPLETED"


def test_tcp_and_http_probes(client: NorthflankClient) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = f"sh -c 'sleep 1; exec python3 -m http.server --bind 127.0.0.1 {port}'"
    for check in (
        readiness(protocol="TCP", port=port),
        readiness(protocol="HTTP", port=port, path="/"),
    ):
        service = client.create_deployment_service(
            PROJECT,
            DeploymentServiceSpec(
                name=f"probed-{check['protocol'].lower()}", command=server, health_checks=[check]
            ),
        )
        client.wait_for_service_ready(PROJECT, service.id, timeout=30, poll_interval=0.05)
        answer = client.run(
            PROJECT, service.id, ["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"]
        )
        assert answer.exit_code == 0  # COMPLETED came only once the server listened
        client.delete_service(PROJECT, service.id)


@pytest.mark.parametrize(
    ("check", "complaint"),
    [
        (readiness(protocol="HTTP", port=80), "healthChecks.0.path: is required for HTTP"),
        (readiness(protocol="TCP"), "healthChecks.0.port: is required for TCP"),
        (readiness(protocol="CMD", cmd="true", periodSeconds=1), "periodSeconds: must be an"),
        (readiness(protocol="UDP", port=1), "healthChecks.0.protocol: must be one of"),
    ],
)
def test_bad_health_checks_are_refused(
    client: NorthflankClient, check: dict[str, Any], complaint: str
) -> None:
    spec = DeploymentServiceSpec(name="bad-probe", command="sleep infinity", health_checks=[check])
    with pytest.raises(ApiValidationError, match=complaint):
        client.create_deployment_service(PROJECT, spec)
