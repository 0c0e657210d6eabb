"""Pydantic models for the parts of the Northflank API this project uses.

Reading is lenient: unknown fields are ignored, optional fields may be missing, and the raw
payload stays available on ``raw`` for anything not modelled. Writing is strict: the create
payload is built field by field and never contains ``null``.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pytest_northflank.client.ports import PortSpec, check_ports
from pytest_northflank.errors import ConfigError

__all__ = [
    "ContainerInfo",
    "DeploymentServiceSpec",
    "DeploymentStatus",
    "ForwardingInfo",
    "LogLine",
    "Project",
    "RateLimitStatus",
    "Service",
    "ServicePort",
    "ServiceSummary",
    "Tag",
]

DeploymentStatus = Literal["PENDING", "IN_PROGRESS", "COMPLETED", "FAILED"]

# Service name rule from the Northflank docs (northflank-api.md section 2.2).
_SERVICE_NAME = re.compile(r"^[a-zA-Z]((-|\s)?[a-zA-Z0-9]+((-|\s)[a-zA-Z0-9]+)*)?$")
_TAG_NAME = re.compile(r"^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _WireModel(BaseModel):
    """A model read from an API response: unknown fields ignored, raw payload kept."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    raw: dict[str, Any] = Field(default_factory=dict, repr=False, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _keep_raw(cls, value: Any) -> Any:
        if isinstance(value, dict) and "raw" not in value:
            return {**value, "raw": dict(value)}
        return value


def _parse_time(value: Any) -> datetime | None:
    """ISO strings or epoch seconds -> aware UTC datetime; anything unreadable -> None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _deployment_status(payload: dict[str, Any]) -> dict[str, Any]:
    status = payload.get("status")
    if not isinstance(status, dict):
        return {}
    deployment = status.get("deployment")
    return deployment if isinstance(deployment, dict) else {}


def _status_value(value: Any) -> str | None:
    if isinstance(value, str) and value in ("PENDING", "IN_PROGRESS", "COMPLETED", "FAILED"):
        return value
    return None


class RateLimitStatus(BaseModel):
    """The latest ``x-ratelimit-*`` figures the API sent: the hourly ``limit``, requests
    ``remaining`` in this window, ``reset_after`` seconds until the window resets (as sent),
    and when they were observed (UTC)."""

    model_config = ConfigDict(frozen=True)

    limit: int | None
    remaining: int | None
    reset_after: float | None
    observed_at: datetime

    @property
    def resets_at(self) -> datetime | None:
        """When the window resets, if the API said."""
        if self.reset_after is None:
            return None
        return datetime.fromtimestamp(
            self.observed_at.timestamp() + self.reset_after, tz=timezone.utc
        )


class Project(_WireModel):
    """A project (``GET /v1/projects``)."""

    id: str
    name: str = ""
    description: str | None = None


class Tag(_WireModel):
    """A resource tag. ``use_spot_nodes`` tags let workloads run on spot-only clusters."""

    id: str
    name: str = ""
    description: str | None = None
    use_spot_nodes: bool = Field(default=False, alias="useSpotNodes")
    use_on_demand_nodes: bool = Field(default=False, alias="useOnDemandNodes")

    @field_validator("use_spot_nodes", "use_on_demand_nodes", mode="before")
    @classmethod
    def _missing_is_false(cls, value: Any) -> Any:
        return False if value is None else value


class ServiceSummary(_WireModel):
    """One entry of ``GET /v1/projects/{p}/services``."""

    id: str
    name: str = ""
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    service_type: str | None = Field(default=None, alias="serviceType")
    deployment_status: DeploymentStatus | None = None
    deployment_reason: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        deployment = _deployment_status(value)
        return {
            **value,
            "tags": [str(t) for t in value.get("tags") or [] if t is not None],
            "deployment_status": _status_value(deployment.get("status")),
            "deployment_reason": deployment.get("reason"),
        }


class ServicePort(_WireModel):
    """A port of a service; ``dns`` is the public name of a public HTTP port (on the emulator
    ``127.0.0.1:PORT``, a plain-HTTP listener)."""

    name: str = ""
    internal_port: int = Field(alias="internalPort")
    protocol: str = "HTTP"
    public: bool = False
    dns: str | None = None


class ForwardingInfo(_WireModel):
    """``GET /v1/port-forwarding/info/...`` (a bare object, no ``data`` envelope)."""

    namespace: str = ""
    target_domain: str = Field(alias="targetDomain")
    pods: list[str] = Field(default_factory=list)
    ports: list[ServicePort] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _pods(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        instances = value.get("instances") or []
        pods = [i.get("podName") for i in instances if isinstance(i, dict) and i.get("podName")]
        return {"raw": dict(value), **value, "pods": pods}


class Service(_WireModel):
    """A deployment service as ``GET /v1/projects/{p}/services/{s}`` describes it.

    ``deployment_status`` is ``status.deployment.status``; ``paused`` reads ``servicePaused``
    and falls back to ``deployment.instances == 0`` when the field is missing.
    """

    id: str
    name: str = ""
    project_id: str | None = Field(default=None, alias="projectId")
    app_id: str | None = Field(default=None, alias="appId")
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    deployment_status: DeploymentStatus | None = None
    deployment_reason: str | None = None
    deployment_message: str | None = None
    last_transition_time: datetime | None = None
    paused: bool = False
    instances: int | None = None
    image: str | None = None
    plan: str | None = None
    created_at: datetime | None = None
    ports: list[ServicePort] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        status = _deployment_status(value)
        deployment = value.get("deployment")
        if not isinstance(deployment, dict):
            deployment = {}
        external = deployment.get("external")
        billing = value.get("billing")
        instances = deployment.get("instances")
        instances = (
            instances if isinstance(instances, int) and not isinstance(instances, bool) else None
        )
        paused = value.get("servicePaused")
        if not isinstance(paused, bool):
            paused = instances == 0
        return {
            **value,
            "tags": [str(t) for t in value.get("tags") or [] if t is not None],
            "deployment_status": _status_value(status.get("status")),
            "deployment_reason": status.get("reason"),
            "deployment_message": status.get("message"),
            "last_transition_time": _parse_time(
                status.get("lastTransitionTime", value.get("lastTransitionTime"))
            ),
            "paused": paused,
            "instances": instances,
            "image": external.get("imagePath") if isinstance(external, dict) else None,
            "plan": billing.get("deploymentPlan") if isinstance(billing, dict) else None,
            "created_at": _parse_time(value.get("createdAt")),
            "ports": [
                port
                for port in value.get("ports") or []
                if isinstance(port, dict) and type(port.get("internalPort")) is int
            ],
        }

    @property
    def ready(self) -> bool:
        """True once the deployment reached COMPLETED."""
        return self.deployment_status == "COMPLETED"


class ContainerInfo(_WireModel):
    """A running instance (pod) of a service; ``name`` is usable as an exec instance name."""

    name: str
    status: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _times(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {
            **value,
            "created_at": _parse_time(value.get("createdAt")),
            "updated_at": _parse_time(value.get("updatedAt")),
        }


class LogLine(_WireModel):
    """One log line: the container that wrote it, the text, and its timestamp (UTC)."""

    container_id: str = ""
    log: str = ""
    ts: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        text = next((value[k] for k in ("log", "message", "line") if value.get(k) is not None), "")
        stamp = next(
            (value[k] for k in ("ts", "timestamp", "time") if value.get(k) is not None), None
        )
        return {
            **value,
            "container_id": str(value.get("containerId") or value.get("container_id") or ""),
            "log": str(text),
            "ts": _parse_time(stamp),
        }


class DeploymentServiceSpec(BaseModel):
    """What to create: a deployment service running ``image`` with ``command``.

    A bad value raises ``ConfigError`` naming the field and the rule it broke.

    ``command`` becomes ``deployment.docker.customCommand`` (``None`` keeps the image's own
    command). ``env`` becomes ``runtimeEnvironment``; ``tags`` are tag *names*;
    ``expiry_time`` becomes ``createOptions.expiryTime`` (a Northflank auto-delete hint).
    ``ports`` (numbers, dicts or :class:`PortSpec`) become ``ports[]``, named when unnamed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'spec'}: "
                f"{error['msg'].removeprefix('Value error, ')}"
                for error in exc.errors()
            )
            raise ConfigError(f"invalid deployment service spec: {problems}") from None

    name: str
    plan: str = "nf-compute-20"
    image: str = "ubuntu:22.04"
    command: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    instances: int = 1
    expiry_time: int | None = None
    #: ``healthChecks`` items as the API takes them (e.g. a ``readinessProbe``).
    health_checks: list[dict[str, Any]] = Field(default_factory=list)
    ports: tuple[PortSpec, ...] = ()

    @field_validator("ports", mode="before")
    @classmethod
    def _ports_rule(cls, value: Any) -> tuple[PortSpec, ...]:
        try:
            return check_ports(value, "ports")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    def __repr_args__(self) -> Any:
        # Environment values may be secrets, and reprs end up in tracebacks and logs.
        for name, value in super().__repr_args__():
            yield name, {key: "***" for key in value} if name == "env" else value

    @field_validator("name")
    @classmethod
    def _name_rule(cls, value: str) -> str:
        if not 3 <= len(value) <= 54 or not _SERVICE_NAME.match(value):
            raise ValueError(
                f"service name {value!r} is invalid: 3-54 characters, starting with a letter, "
                "letters and digits in groups separated by single '-' or spaces"
            )
        return value

    @field_validator("tags")
    @classmethod
    def _tag_rule(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not _TAG_NAME.match(tag):
                raise ValueError(
                    f"tag name {tag!r} is invalid: letters and digits separated by single '-'"
                )
        return value

    @field_validator("env")
    @classmethod
    def _env_rule(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _ENV_NAME.match(key):
                raise ValueError(f"environment variable name {key!r} is invalid")
        return value

    @field_validator("description")
    @classmethod
    def _description_rule(cls, value: str | None) -> str | None:
        if value is not None and len(value) > 200:
            raise ValueError(f"description is {len(value)} characters; the API allows 200")
        return value

    @field_validator("instances")
    @classmethod
    def _instances_rule(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"instances must be >= 0, got {value}")
        return value

    @field_validator("plan", "image")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    def to_payload(self) -> dict[str, Any]:
        """The ``POST .../services/deployment`` body (no ``null`` anywhere)."""
        docker: dict[str, Any] = (
            {"configType": "default"}
            if self.command is None
            else {"configType": "customCommand", "customCommand": self.command}
        )
        payload: dict[str, Any] = {
            "name": self.name,
            "billing": {"deploymentPlan": self.plan},
            "deployment": {
                "instances": self.instances,
                "external": {"imagePath": self.image},
                "docker": docker,
            },
        }
        if self.description is not None:
            payload["description"] = self.description
        if self.tags:
            payload["tags"] = list(self.tags)
        if self.env:
            payload["runtimeEnvironment"] = dict(self.env)
        if self.expiry_time is not None:
            payload["createOptions"] = {"expiryTime": self.expiry_time}
        if self.health_checks:
            payload["healthChecks"] = [dict(check) for check in self.health_checks]
        if self.ports:
            payload["ports"] = [port.to_payload() for port in self.ports]
        return payload
