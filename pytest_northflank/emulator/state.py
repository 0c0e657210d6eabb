"""Everything the emulator remembers: projects, tags, services, settings, faults, the rate limit.

Routes and the control plane read and change it only from the server's event loop, so it needs
no locks. Deployment status follows moto's habit: it is worked out when someone looks
(:meth:`EmulatorState.refresh`), from the clock and from the container's main process, so a
``ready_delay`` of 0 gives ``COMPLETED`` on the first look and a delay gives time-based
``PENDING -> IN_PROGRESS -> COMPLETED``.
"""

from __future__ import annotations

import asyncio
import secrets
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from pytest_northflank.emulator.faults import Faults, RateLimiter
from pytest_northflank.emulator.relay import PublishedPorts
from pytest_northflank.emulator.runtime import Container, LogRecord
from pytest_northflank.emulator.secrets import SecretGroups
from pytest_northflank.emulator.validation import ServiceSpec, TagSpec
from pytest_northflank.errors import ApiError, ApiValidationError, ConflictError, NotFoundError

DeploymentStatus = Literal["PENDING", "IN_PROGRESS", "COMPLETED", "FAILED"]
RolloutReason = Literal["DEPLOYING", "SCALING"]

#: A main process must stay alive this long after it started before the deployment can be
#: COMPLETED: a command that dies at once (``exit 3``, a crash on start) is reported FAILED
#: deterministically instead of racing the first status poll.
STARTUP_SETTLE_SECONDS = 0.15
SPOT_ONLY_MESSAGE = "Workload is not tagged as spot, but cluster has only spot nodes configured"
BYOC_PROJECT_CREATE_MESSAGE = "Region not found"
CLUSTER = {"id": "nf-emulator", "name": "Northflank emulator", "namespace": "nf-emulator"}
REGION = "emulator"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``, as the API writes timestamps."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pod_name(service_id: str) -> str:
    """A Kubernetes-style pod name: ``<service>-<replicaset hash>-<pod suffix>``."""
    alphabet = string.ascii_lowercase + string.digits
    pick = secrets.choice
    return (
        f"{service_id}-{''.join(pick(alphabet) for _ in range(9))}"
        f"-{''.join(pick(alphabet) for _ in range(5))}"
    )


@dataclass
class EmulatorConfig:
    """What the emulator starts with, and what :meth:`EmulatorState.reset` returns to."""

    project_ids: Sequence[str] = ("default-project",)
    ready_delay: float = 0.0
    spot_only: bool = False
    rate_limit_per_hour: int | None = None
    #: ``None``: ``POST /v1/projects`` works; a text: it fails with that message, as on a
    #: BYOC cluster (default text ``"Region not found"``).
    project_create_error: str | None = None
    #: Services must name tags that exist (``POST /v1/tags`` first).
    require_existing_tags: bool = True


@dataclass
class ProjectRecord:
    id: str
    name: str
    description: str | None
    region: str
    created_at: datetime


@dataclass
class TagRecord:
    id: str
    name: str
    fields: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @property
    def use_spot_nodes(self) -> bool:
        return self.fields.get("useSpotNodes") is True


@dataclass
class Instance:
    """One container (pod) of a service."""

    name: str
    created_at: datetime
    container: Container | None = None
    started_at: float | None = None  # monotonic, once the main process runs
    start_error: str | None = None
    image_notice: str | None = None  #: set when the host's userland stands in for the image
    start_exit_code: int | None = None
    #: The readiness probe passed (always True for a service without one).
    probe_passed: bool = False
    probe_task: asyncio.Task[None] | None = None
    #: the ``127.0.0.1`` listeners of its public HTTP ports (namespace mode)
    published: PublishedPorts | None = None

    def main_exit_code(self) -> int | None:
        if self.container is not None:
            return self.container.exit_code()
        return self.start_exit_code

    def is_running(self) -> bool:
        return self.container is not None and self.container.is_running()

    def task_status(self, ready: bool) -> str:
        if self.container is None and self.start_error is None:
            return "TASK_STAGING"
        if self.is_running():
            return "TASK_RUNNING" if ready else "TASK_STARTING"
        return "TASK_FINISHED" if self.main_exit_code() == 0 else "TASK_FAILED"


@dataclass
class Rollout:
    """A deployment in progress (create, restart, resume, scale up)."""

    reason: RolloutReason
    started: float  # monotonic
    ready_delay: float
    fail_readiness: bool


@dataclass
class ServiceRecord:
    project_id: str
    spec: ServiceSpec
    created_at: datetime
    updated_at: datetime
    plan: str
    instances: int
    paused: bool = False
    instance: Instance | None = None
    rollout: Rollout | None = None
    status: DeploymentStatus = "PENDING"
    status_reason: RolloutReason = "DEPLOYING"
    status_message: str | None = None
    last_transition: datetime = field(default_factory=utcnow)
    #: log lines of earlier instances (restarts, pauses): (instance name, record)
    old_logs: list[tuple[str, LogRecord]] = field(default_factory=list)
    #: paused services remember what to resume to
    instances_before_pause: int = 1
    deleted: bool = False

    @property
    def id(self) -> str:
        return self.spec.id

    def set_status(
        self, status: DeploymentStatus, reason: RolloutReason, message: str | None = None
    ) -> None:
        if (status, reason) != (self.status, self.status_reason):
            self.last_transition = utcnow()
        self.status, self.status_reason, self.status_message = status, reason, message


class EmulatorState:
    """Projects, tags, services, cluster settings, faults and the rate limit of one emulator."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.projects: dict[str, ProjectRecord] = {}
        self.tags: dict[str, TagRecord] = {}
        self.services: dict[tuple[str, str], ServiceRecord] = {}
        self.secret_groups = SecretGroups()
        self.faults = Faults()
        self.rate_limit = RateLimiter(config.rate_limit_per_hour)
        self.spot_only = config.spot_only
        self.project_create_error = config.project_create_error
        self.reset()

    def reset(self) -> list[ServiceRecord]:
        """Back to the configured start; returns the services dropped (their containers must
        be stopped by the caller)."""
        dropped = list(self.services.values())
        for service in dropped:
            service.deleted = True
        now = utcnow()
        self.projects = {
            project_id: ProjectRecord(project_id, project_id, None, REGION, now)
            for project_id in self.config.project_ids
        }
        self.tags = {}
        self.services = {}
        self.secret_groups.clear()
        self.faults = Faults(ready_delay=self.config.ready_delay)
        self.rate_limit = RateLimiter(self.config.rate_limit_per_hour)
        self.spot_only = self.config.spot_only
        self.project_create_error = self.config.project_create_error
        return dropped

    # -- projects and tags --------------------------------------------------------------------

    def project(self, project_id: str) -> ProjectRecord:
        try:
            return self.projects[project_id]
        except KeyError:
            raise NotFoundError(f"Project {project_id!r} not found", status=404) from None

    def add_project(self, record: ProjectRecord) -> None:
        if self.project_create_error is not None:
            raise ApiError(self.project_create_error, status=400)
        if record.id in self.projects:
            raise ConflictError(f"A project with the id {record.id!r} already exists", status=409)
        self.projects[record.id] = record

    def tag(self, tag_id: str) -> TagRecord:
        try:
            return self.tags[tag_id]
        except KeyError:
            raise NotFoundError(f"Tag {tag_id!r} not found", status=404) from None

    def tag_by_name(self, name: str) -> TagRecord | None:
        return next((tag for tag in self.tags.values() if tag.name == name), None)

    def add_tag(self, spec: TagSpec) -> TagRecord:
        """Create the tag ``spec`` describes (409 when one with its name exists)."""
        if spec.id in self.tags:
            raise ConflictError(f"A tag named {spec.name!r} already exists", status=409)
        now = utcnow()
        tag = TagRecord(spec.id, spec.name, spec.fields, now, now)
        self.tags[tag.id] = tag
        return tag

    # -- services -----------------------------------------------------------------------------

    def service(self, project_id: str, service_id: str) -> ServiceRecord:
        self.project(project_id)
        try:
            return self.services[(project_id, service_id)]
        except KeyError:
            raise NotFoundError(
                f"Service {service_id!r} not found in project {project_id!r}", status=404
            ) from None

    def project_services(self, project_id: str) -> list[ServiceRecord]:
        return [s for (p, _), s in self.services.items() if p == project_id]

    def check_new_service(self, project_id: str, spec: ServiceSpec) -> None:
        """Conflicts and cluster rules a valid body can still break."""
        self.project(project_id)
        if (project_id, spec.id) in self.services:
            raise ConflictError(
                f"A service with the id {spec.id!r} (from the name {spec.name!r}) already "
                f"exists in project {project_id!r}",
                status=409,
            )
        tags = [self.tag_by_name(name) for name in spec.tags]
        if self.config.require_existing_tags:
            missing = [name for name, tag in zip(spec.tags, tags, strict=True) if tag is None]
            if missing:
                raise ApiValidationError(
                    f"Tag {missing[0]!r} not found: create it first (POST /v1/tags)",
                    status=400,
                    details=[{"path": ["tags"], "message": f"unknown tag {missing[0]!r}"}],
                )
        if self.spot_only and not any(tag is not None and tag.use_spot_nodes for tag in tags):
            raise ApiError(SPOT_ONLY_MESSAGE, status=400)

    def add_service(self, project_id: str, spec: ServiceSpec) -> ServiceRecord:
        self.check_new_service(project_id, spec)
        now = utcnow()
        service = ServiceRecord(
            project_id=project_id,
            spec=spec,
            created_at=now,
            updated_at=now,
            plan=spec.plan,
            instances=spec.instances,
        )
        self.services[(project_id, spec.id)] = service
        return service

    def remove_service(self, service: ServiceRecord) -> None:
        service.deleted = True
        if self.services.get((service.project_id, service.id)) is service:
            del self.services[(service.project_id, service.id)]

    # -- deployment status ---------------------------------------------------------------------

    def begin_rollout(self, service: ServiceRecord, reason: RolloutReason) -> None:
        service.rollout = Rollout(
            reason=reason,
            started=time.monotonic(),
            ready_delay=self.faults.ready_delay,
            fail_readiness=self.faults.fail_readiness,
        )
        service.set_status("PENDING", reason)

    def settle_wait(self, service: ServiceRecord) -> float:
        """Seconds to wait before :meth:`refresh` can decide a rollout whose delay is over
        (the main process must first live :data:`STARTUP_SETTLE_SECONDS`)."""
        rollout, instance = service.rollout, service.instance
        if rollout is None or instance is None or instance.started_at is None:
            return 0.0
        now = time.monotonic()
        if now - rollout.started < rollout.ready_delay or not instance.is_running():
            return 0.0
        return max(STARTUP_SETTLE_SECONDS - (now - instance.started_at), 0.0)

    def refresh(self, service: ServiceRecord) -> None:
        """Move the deployment status on, from the clock and the main process."""
        rollout = service.rollout
        if rollout is None:
            return
        instance = service.instance
        if service.instances == 0 or instance is None:
            service.rollout = None
            service.set_status("COMPLETED", rollout.reason)
            return
        if instance.start_error is not None:
            service.rollout = None
            service.set_status("FAILED", rollout.reason, instance.start_error)
            return
        if instance.container is None or instance.started_at is None:
            return  # still starting
        now = time.monotonic()
        code = instance.main_exit_code()
        if code is not None:
            service.rollout = None
            service.set_status(
                "FAILED",
                rollout.reason,
                f"The main process exited with code {code} before the deployment was ready",
            )
            return
        elapsed = now - rollout.started
        if service.spec.readiness is not None and not instance.probe_passed:
            # As on Northflank: not ready until the readiness probe passes.
            service.set_status("IN_PROGRESS", rollout.reason)
            return
        if elapsed >= rollout.ready_delay and now - instance.started_at >= STARTUP_SETTLE_SECONDS:
            service.rollout = None
            if rollout.fail_readiness:
                service.set_status(
                    "FAILED",
                    rollout.reason,
                    "Readiness check failed (failing readiness injected by the emulator's "
                    "control plane)",
                )
            else:
                service.set_status("COMPLETED", rollout.reason)
        elif rollout.ready_delay > 0 and elapsed >= rollout.ready_delay / 2:
            service.set_status("IN_PROGRESS", rollout.reason)

    def accepts_exec(self, service: ServiceRecord) -> bool:
        """Ready, or running and waiting only for its readiness probe (as on Kubernetes, a
        container that is not ready yet can still be exec'd into)."""
        instance = service.instance
        waiting_for_probe = (
            service.spec.readiness is not None
            and service.status == "IN_PROGRESS"
            and instance is not None
            and not instance.probe_passed
            and instance.is_running()
        )
        return waiting_for_probe or self.is_ready(service)

    def is_ready(self, service: ServiceRecord) -> bool:
        return (
            service.status == "COMPLETED"
            and not service.paused
            and service.instance is not None
            and service.instance.is_running()
        )

    # -- dumps ---------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The state dump of ``GET /_emulator/state``."""
        now = time.monotonic()
        services = []
        for service in self.services.values():
            instance = service.instance
            services.append(
                {
                    "projectId": service.project_id,
                    "id": service.id,
                    "name": service.spec.name,
                    "status": service.status,
                    "reason": service.status_reason,
                    "message": service.status_message,
                    "paused": service.paused,
                    "instances": service.instances,
                    "argv": service.spec.argv,
                    "instance": None
                    if instance is None
                    else {
                        "name": instance.name,
                        "running": instance.is_running(),
                        "exitCode": instance.main_exit_code(),
                        "pid": instance.container.pid if instance.container else None,
                        "startError": instance.start_error,
                        "imageNotice": instance.image_notice,
                    },
                }
            )
        return {
            "projects": [{"id": p.id, "name": p.name} for p in self.projects.values()],
            "tags": [{"id": t.id, "name": t.name, **t.fields} for t in self.tags.values()],
            "services": services,
            "faults": self.faults.to_json(),
            "rateLimit": self.rate_limit.to_json(now),
            "cluster": {
                "spotOnly": self.spot_only,
                "projectCreateError": self.project_create_error,
                "requireExistingTags": self.config.require_existing_tags,
            },
        }
