"""How Sandbox.url/address/hostname choose what to hand out, against a recording stand-in for
the client (the real paths run end to end in tests/plugin/test_sandbox_network.py)."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_northflank import ArgumentError, NetworkError, Sandbox
from pytest_northflank.client import Service
from pytest_northflank.config.settings import SandboxOptions
from pytest_northflank.errors import PermissionDeniedError


class RecordingClient:
    def __init__(self, ports: list[dict[str, Any]], info_error: Exception | None = None) -> None:
        self.ports = ports
        self.info_error = info_error
        self.calls: list[str] = []

    def get_service(self, project_id: str, service_id: str) -> Service:
        self.calls.append("get_service")
        return Service.model_validate({"id": service_id, "ports": self.ports})

    def forward(self, project_id: str, service_id: str, port: int) -> tuple[str, int]:
        self.calls.append(f"forward {port}")
        return "127.0.0.1", 40000 + port

    def forwarding_info(self, project_id: str, service_id: str) -> object:
        self.calls.append("forwarding_info")
        if self.info_error is not None:
            raise self.info_error
        return object()


def sandbox(client: RecordingClient, ports: list[Any]) -> Sandbox:
    return Sandbox(
        client,  # type: ignore[arg-type]
        project_id="p",
        service_id="web-1",
        name="web-1",
        options=SandboxOptions(ports=ports),
        dashboard_url="https://example.invalid",
    )


def test_a_public_port_on_northflank_is_its_https_name() -> None:
    dns = "p8000--web-1--p--team.abcd.code.run"
    client = RecordingClient([{"name": "p8000", "internalPort": 8000, "protocol": "HTTP",
                               "public": True, "dns": dns}])  # fmt: skip
    box = sandbox(client, [{"port": 8000, "public": True}])
    assert box.url(8000, "/health") == f"https://{dns}/health"
    assert client.calls == ["get_service"]


def test_the_emulator_public_listener_is_plain_http() -> None:
    client = RecordingClient([{"name": "p8000", "internalPort": 8000, "protocol": "HTTP",
                               "public": True, "dns": "127.0.0.1:41234"}])  # fmt: skip
    assert sandbox(client, [{"port": 8000, "public": True}]).url(8000) == "http://127.0.0.1:41234/"


def test_a_private_port_goes_through_a_forward() -> None:
    client = RecordingClient([])
    box = sandbox(client, [8000, {"port": 5432, "protocol": "TCP"}])
    assert box.url(8000, "/x?y=1") == "http://127.0.0.1:48000/x?y=1"
    assert box.forward(5432) == ("127.0.0.1", 45432)
    assert client.calls == ["forward 8000", "forward 5432"]


def test_address_and_hostname() -> None:
    client = RecordingClient([])
    box = sandbox(client, [5432])
    assert box.address(5432) == "web-1:5432"
    assert box.hostname == "web-1"
    assert client.calls == ["forwarding_info"]  # asked once, remembered


def test_a_backend_without_network_refuses_and_other_errors_do_not() -> None:
    refusing = RecordingClient([], NetworkError("the emulator runs without network namespaces"))
    with pytest.raises(NetworkError, match="without network namespaces"):
        sandbox(refusing, [5432]).address(5432)
    unpermitted = RecordingClient([], PermissionDeniedError("no forwarding permission", status=403))
    assert sandbox(unpermitted, [5432]).hostname == "web-1"


def test_what_cannot_be_reached_is_said() -> None:
    box = sandbox(RecordingClient([]), [8000, {"port": 53, "protocol": "UDP"}])
    with pytest.raises(
        NetworkError, match=r"port 9000 is not a port of sandbox web-1 \(its ports: 8000, 53\)"
    ):
        box.url(9000)
    with pytest.raises(ArgumentError, match="port 53 is UDP"):
        box.url(53)
    with pytest.raises(ArgumentError, match="path must start with '/'"):
        box.url(8000, "health")
    with pytest.raises(ArgumentError, match="port must be a whole number"):
        box.forward("8000")  # type: ignore[arg-type]
