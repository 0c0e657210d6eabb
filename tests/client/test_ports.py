"""Port specs: what users write becomes the API's ``ports[]``, or a ConfigError naming where."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_northflank.client import DeploymentServiceSpec, PortSpec, check_ports
from pytest_northflank.errors import ConfigError


def test_numbers_dicts_and_text_become_named_ports() -> None:
    ports = check_ports(
        [
            8000,
            {"port": 5432, "protocol": "tcp", "name": "db"},
            "9000/UDP",
            PortSpec(443, public=True),
        ],
        "test",
    )
    assert [p.to_payload() for p in ports] == [
        {"name": "p8000", "internalPort": 8000, "protocol": "HTTP", "public": False},
        {"name": "db", "internalPort": 5432, "protocol": "TCP", "public": False},
        {"name": "p9000", "internalPort": 9000, "protocol": "UDP", "public": False},
        {"name": "p443", "internalPort": 443, "protocol": "HTTP", "public": True},
    ]
    assert check_ports(8000, "test") == (PortSpec(8000, name="p8000"),)
    assert check_ports(None, "test") == ()


def test_a_generated_name_steps_around_a_taken_one() -> None:
    ports = check_ports([{"port": 1, "name": "p8000"}, 8000], "test")
    assert [p.name for p in ports] == ["p8000", "a8000"]


def test_the_create_payload_carries_the_ports() -> None:
    spec = DeploymentServiceSpec(name="with ports", ports=[8000])
    assert spec.to_payload()["ports"] == [
        {"name": "p8000", "internalPort": 8000, "protocol": "HTTP", "public": False}
    ]
    assert "ports" not in DeploymentServiceSpec(name="no ports").to_payload()
    with pytest.raises(ConfigError, match=r"ports: .*'port' must be a whole number 1-65535"):
        DeploymentServiceSpec(name="bad ports", ports=[0])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([True], "expected a port number or a dict, got True"),
        ([{"port": 65536}], "'port' must be a whole number 1-65535, got 65536"),
        ([{"port": "80"}], "'port' must be a whole number 1-65535, got '80'"),
        ([{"port": 80, "protocol": "QUIC"}], "'protocol' must be one of HTTP, HTTP/2, TCP, UDP"),
        ([{"port": 80, "public": "yes"}], "'public' must be True or False, got 'yes'"),
        ([{"port": 80, "protocol": "TCP", "public": True}], "must be HTTP or HTTP/2, not TCP"),
        ([{"port": 80, "name": "9lives"}], "'name' must be 1-8 characters"),
        ([{"port": 80, "name": "a--b"}], "'name' must be 1-8 characters"),
        ([{"port": 80, "name": "abcdefghi"}], "'name' must be 1-8 characters"),
        ([{"port": 80, "nmae": "x"}], "unknown key 'nmae' (allowed: port, protocol, public, name)"),
        ([80, {"port": 80}], "bad port #2 in test: port 80 is listed twice"),
        ([{"port": 1, "name": "db"}, {"port": 2, "name": "DB"}], "the name 'DB' is used twice"),
        (["http"], "expected PORT or PORT/PROTOCOL, got 'http'"),
    ],
)
def test_bad_ports_say_what_and_where(value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_ports(value, "test")
    assert message in str(caught.value)
    assert str(caught.value).startswith("bad port #")
