"""Checks for the update bodies of services and jobs (contract section 12).

``POST .../deployment`` (image and command), ``POST .../runtime-environment`` (a full
replacement of the workload's own variables), ports (section 16) and health checks (12.4),
and the runtime-environment answers with the variables inherited from secret groups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pytest_northflank.emulator.jobs import check_image
from pytest_northflank.emulator.secrets import Inherited
from pytest_northflank.emulator.validation import (
    PORT_PROTOCOLS,
    Problems,
    check_docker,
    check_runtime_env,
    is_int,
    type_name,
)

PORT_NAME_RE = re.compile(r"^[a-zA-Z](-?[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*)?$")
PORT_NAME_MAX = 8
PORT_FIELDS = {
    "id", "name", "internalPort", "protocol", "public", "domains", "disableNfDomain",
    "security", "advancedOptions", "vpcAccessible",
}  # fmt: skip
PUBLIC_PROTOCOLS = ("HTTP", "HTTP/2")
HEALTH_PROTOCOLS = ("HTTP", "CMD", "TCP")
HEALTH_TYPES = ("livenessProbe", "readinessProbe", "startupProbe")
HEALTH_RANGES = {
    "initialDelaySeconds": (1, 180, True),
    "periodSeconds": (10, 600, True),
    "timeoutSeconds": (1, 60, True),
    "failureThreshold": (1, 255, True),
    "successThreshold": (1, 255, False),
}
HEALTH_PATH_RE = re.compile(r"^\/([a-zA-Z0-9-._]+\/)*[a-zA-Z0-9-._]+$")


@dataclass
class DeploymentUpdate:
    """What a ``POST .../deployment`` (or a run's ``deployment`` override) changes."""

    image: str | None
    docker: dict[str, Any] | None
    argv: list[str] | None


def check_deployment_update(problems: Problems, body: Any, at: str) -> DeploymentUpdate | None:
    prefix = f"{at}." if at else ""
    if not isinstance(body, dict):
        problems.add(at, f"must be an object, got {type_name(body)}")
        return None
    for key in body:
        if key not in ("external", "internal", "docker", "buildpack", "storage", "gpu"):
            problems.add(f"{prefix}{key}", "is not allowed")
    if body.get("internal") is not None:
        problems.add(f"{prefix}internal", "builds are not available on the emulator")
    if body.get("buildpack") is not None:
        problems.add(f"{prefix}buildpack", "buildpacks need a build; not on the emulator")
    image = None
    if body.get("external") is not None:
        image = check_image(problems, body["external"], f"{prefix}external")
    docker = argv = None
    if body.get("docker") is not None:
        docker, argv = check_docker(problems, body["docker"])
    return DeploymentUpdate(image, docker, argv)


def check_env_body(body: Any) -> dict[str, str]:
    """``{runtimeEnvironment (required), runtimeFiles?}``: the new own variables."""
    problems = Problems()
    if not isinstance(body, dict):
        problems.add("", f"must be an object, got {type_name(body)}")
        problems.raise_if_any()
    assert isinstance(body, dict)
    for key in body:
        if key not in ("runtimeEnvironment", "runtimeFiles"):
            problems.add(str(key), "is not allowed")
    if body.get("runtimeEnvironment") is None:
        problems.add("runtimeEnvironment", "is required")
    if body.get("runtimeFiles"):
        problems.add("runtimeFiles", "runtime files are not supported by the emulator")
    env = check_runtime_env(problems, body.get("runtimeEnvironment"))
    problems.raise_if_any()
    return env


def environment_view(
    own: dict[str, str], inherited: dict[str, Inherited], show: str | None
) -> dict[str, Any]:
    """``GET .../runtime-environment``: own variables win over inherited ones."""
    shown: dict[str, str] = {}
    if show in (None, "", "all", "inherited"):
        shown.update({key: item.value for key, item in inherited.items()})
    if show in (None, "", "all", "this"):
        shown.update(own)
    return {"runtimeEnvironment": shown, "runtimeFiles": {}}


def environment_details(own: dict[str, str], inherited: dict[str, Inherited]) -> dict[str, Any]:
    """``GET .../runtime-environment/details``."""
    details: dict[str, Any] = {}
    for key, item in inherited.items():
        details[key] = {
            "value": item.value,
            "inheritedFrom": item.group_id,
            "priority": item.priority,
            "overriding": list(item.overriding),
        }
    for key, value in own.items():
        beaten = details.get(key)
        overriding = []
        if beaten is not None:
            overriding = [
                {k: beaten[k] for k in ("value", "inheritedFrom", "priority")},
                *beaten["overriding"],
            ]
        details[key] = {"value": value, "overriding": overriding}
    return {"runtimeEnvironment": details, "runtimeFiles": {}}


def check_ports(
    problems: Problems, value: Any, path: str, existing: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Ports as stored: validated, each with a stable ``id`` (kept when passed back)."""
    if not isinstance(value, list):
        problems.add(path, f"must be an array, got {type_name(value)}")
        return []
    known = {str(port.get("id")): port for port in existing}
    ports: list[dict[str, Any]] = []
    names: set[str] = set()
    numbers: set[int] = set()
    for index, raw in enumerate(value):
        at = f"{path}.{index}"
        if not isinstance(raw, dict):
            problems.add(at, f"must be an object, got {type_name(raw)}")
            continue
        for key in raw:
            if key not in PORT_FIELDS:
                problems.add(f"{at}.{key}", "is not allowed")
        name, number, protocol = raw.get("name"), raw.get("internalPort"), raw.get("protocol")
        if not isinstance(name, str) or not PORT_NAME_RE.match(name):
            problems.add(f"{at}.name", f"is required and must match {PORT_NAME_RE.pattern}")
        elif len(name) > PORT_NAME_MAX:
            problems.add(f"{at}.name", f"must be at most {PORT_NAME_MAX} characters")
        elif name in names:
            problems.add(f"{at}.name", f"duplicate port name {name!r}")
        if not is_int(number) or not 1 <= number <= 65535:
            problems.add(f"{at}.internalPort", "must be an integer from 1 to 65535")
        elif number in numbers:
            problems.add(f"{at}.internalPort", f"duplicate internal port {number}")
        if protocol not in PORT_PROTOCOLS:
            problems.add(f"{at}.protocol", f"must be one of {', '.join(PORT_PROTOCOLS)}")
        public = raw.get("public", False)
        if not isinstance(public, bool):
            problems.add(f"{at}.public", "must be a boolean")
        elif public and protocol not in PUBLIC_PROTOCOLS:
            problems.add(f"{at}.public", "public ports support only HTTP and HTTP/2")
        if not isinstance(name, str) or not is_int(number):
            continue
        names.add(name)
        numbers.add(number)
        port_id = raw.get("id")
        previous = known.get(str(port_id)) if port_id is not None else None
        port = {**(previous or {}), **raw}
        port["id"] = str(port_id) if previous is not None else name.lower()
        port.setdefault("public", False)
        port.setdefault("domains", [])
        ports.append(port)
    return ports


def ports_view(ports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ports as answers show them: ``domains`` as objects, ``ip`` folded into policies."""
    views = []
    for port in ports:
        view = {k: v for k, v in port.items() if k not in ("advancedOptions",)}
        view["domains"] = [
            d if isinstance(d, dict) else {"name": d, "certificate": {"inProgress": False}}
            for d in port.get("domains") or []
        ]
        security = view.get("security")
        if isinstance(security, dict) and "ip" in security:
            security = dict(security)
            security["policies"] = [*security.get("policies", []), *security.pop("ip")]
            view["security"] = security
        views.append(view)
    return views


def check_health_checks(problems: Problems, value: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        problems.add(path, f"must be an array, got {type_name(value)}")
        return []
    checks = []
    for index, check in enumerate(value):
        at = f"{path}.{index}"
        if not isinstance(check, dict):
            problems.add(at, f"must be an object, got {type_name(check)}")
            continue
        protocol = check.get("protocol")
        if protocol not in HEALTH_PROTOCOLS:
            problems.add(f"{at}.protocol", f"must be one of {', '.join(HEALTH_PROTOCOLS)}")
        if check.get("type") not in HEALTH_TYPES:
            problems.add(f"{at}.type", f"must be one of {', '.join(HEALTH_TYPES)}")
        for key, (low, high, required) in HEALTH_RANGES.items():
            number = check.get(key)
            if number is None:
                if required:
                    problems.add(f"{at}.{key}", "is required")
            elif not is_int(number) or not low <= number <= high:
                problems.add(f"{at}.{key}", f"must be an integer from {low} to {high}")
        if protocol == "HTTP":
            path_text = check.get("path")
            if not isinstance(path_text, str) or not HEALTH_PATH_RE.match(path_text):
                problems.add(f"{at}.path", "is required for HTTP and must be like /healthz")
        if protocol in ("HTTP", "TCP"):
            port = check.get("port")
            if not is_int(port) or port < 1:
                problems.add(f"{at}.port", f"is required for {protocol}: an integer >= 1")
        if protocol == "CMD" and not isinstance(check.get("cmd"), str):
            problems.add(f"{at}.cmd", "is required for CMD: a command string")
        checks.append(dict(check))
    return checks


def health_checks_view(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The GET shape: ``port`` comes back as ``httpPort`` or ``tcpSocketPort``."""
    views = []
    for check in checks:
        view = {k: v for k, v in check.items() if k != "port"}
        if "port" in check:
            view["httpPort" if check.get("protocol") == "HTTP" else "tcpSocketPort"] = check["port"]
        views.append(view)
    return views
