"""Service lifecycle on the container runtime: start, stop, restart, pause, resume, delete.

Blocking runtime calls (start, stop) run on worker threads so the event loop keeps serving;
state is only touched back on the loop.
"""

from __future__ import annotations

import asyncio
import functools
import shlex
import time
from collections.abc import Iterable

from pytest_northflank.emulator.health_checks import watch_readiness
from pytest_northflank.emulator.images import Image, ImageError, main_argv
from pytest_northflank.emulator.images.provider import HostFallback, ImageProvider
from pytest_northflank.emulator.relay import publish
from pytest_northflank.emulator.runtime import (
    PLAN_MEMORY_MB,
    CommandNotRunnable,
    Container,
    ContainerRuntime,
    LogRecord,
)
from pytest_northflank.emulator.state import (
    EmulatorState,
    Instance,
    RolloutReason,
    ServiceRecord,
    pod_name,
    utcnow,
)
from pytest_northflank.emulator.validation import ServiceSpec
from pytest_northflank.errors import EmulatorError

DEFAULT_GRACE_SECONDS = 2.0
MAX_KEPT_LOG_LINES = 10_000


class Deployments:
    """Runs each service's instance as a local container."""

    def __init__(
        self, state: EmulatorState, runtime: ContainerRuntime, images: ImageProvider | None = None
    ) -> None:
        self.state = state
        self.runtime = runtime
        self.images = images or ImageProvider(None, directory_mode=runtime.isolation != "namespace")

    async def roll_out(self, service: ServiceRecord, reason: RolloutReason) -> None:
        """Replace the service's instance (if any) by a new one and start a rollout."""
        await self.stop_instance(service)
        self.state.begin_rollout(service, reason)
        if service.instances > 0 and not service.paused:
            await self._start_instance(service)

    async def stop_instance(self, service: ServiceRecord, grace: float | None = None) -> None:
        """Stop the instance: every process dies, the sandbox's disk is freed."""
        instance, service.instance = service.instance, None
        if instance is None or instance.container is None:
            return
        container = instance.container
        if instance.probe_task is not None:
            instance.probe_task.cancel()
        if instance.published is not None:
            await instance.published.close()
        kept = service.old_logs
        kept.extend((instance.name, record) for record in container.log_lines())
        del kept[: max(len(kept) - MAX_KEPT_LOG_LINES, 0)]
        await self._stop(container, self._grace(service) if grace is None else grace)

    async def drop(self, services: Iterable[ServiceRecord]) -> None:
        """Stop the containers of services already removed from the state, all at once."""
        await asyncio.gather(*(self.stop_instance(service) for service in services))

    async def _start_instance(self, service: ServiceRecord) -> None:
        instance = Instance(name=pod_name(service.id), created_at=utcnow())
        service.instance = instance
        spec = service.spec
        # Secret groups that reach the service, under its own variables (own win).
        env = {
            **self.state.secret_groups.environment(
                service.project_id, "service", service.id, spec.tags
            ),
            **spec.env,
        }
        try:
            # Pulling may take a while: the deployment stays in progress meanwhile.
            image = await asyncio.to_thread(self.images.get, spec.image, spec.credentials)
        except ImageError as exc:
            instance.start_error = f"The image could not be pulled: {exc}"
            return
        if isinstance(image, HostFallback):
            argv, instance.image_notice, chosen = list(spec.argv), image.notice, None
        else:
            argv, chosen = image_argv(spec, image), image
            if not argv:
                instance.start_error = (
                    f"The image {spec.image} names no command (no Entrypoint or Cmd): set a "
                    "custom command"
                )
                return
        try:
            container = await asyncio.to_thread(
                functools.partial(
                    self.runtime.start,
                    instance.name,
                    argv,
                    env,
                    chosen,
                    memory_mb=PLAN_MEMORY_MB.get(service.plan),
                    names=(service.id,),
                )
            )
        except CommandNotRunnable as exc:
            instance.start_error = f"The main command could not be started: {exc}"
            instance.start_exit_code = exc.exit_code
            return
        except EmulatorError as exc:
            instance.start_error = f"The container could not be started: {exc}"
            return
        if service.deleted or service.instance is not instance:
            # Deleted, paused or restarted while it was starting.
            await self._stop(container, 0.0)
            return
        instance.container = container
        instance.started_at = time.monotonic()
        instance.published = await publish(self.runtime, container, spec.ports)
        if service.instance is not instance:  # stopped while its ports were being published
            await instance.published.close()
            return
        check = spec.readiness
        if check is not None:

            def passed() -> None:
                instance.probe_passed = True

            instance.probe_task = asyncio.create_task(
                watch_readiness(container, check, passed), name=f"readiness-{service.id}"
            )

    def _grace(self, service: ServiceRecord) -> float:
        grace = service.spec.grace_period
        return DEFAULT_GRACE_SECONDS if grace is None else grace

    @staticmethod
    async def _stop(container: Container, grace: float) -> None:
        await asyncio.to_thread(container.stop, grace)


async def current(state: EmulatorState, project_id: str, service_id: str) -> ServiceRecord:
    """The service with its deployment status brought up to date."""
    service = state.service(project_id, service_id)
    wait = state.settle_wait(service)
    if wait > 0:
        await asyncio.sleep(wait)
        service = state.service(project_id, service_id)  # it may be gone by now
    state.refresh(service)
    return service


def service_logs(service: ServiceRecord) -> list[tuple[str, LogRecord]]:
    """Every kept log line of the service, oldest first, with the instance that wrote it."""
    lines = list(service.old_logs)
    instance = service.instance
    if instance is not None and instance.container is not None:
        lines += [(instance.name, record) for record in instance.container.log_lines()]
    return lines


def image_argv(spec: ServiceSpec, image: Image) -> list[str]:
    """The main command as Northflank builds it from the image and the docker settings."""
    docker = spec.docker  # checked when the service was created or updated

    def words(key: str) -> list[str]:
        text = docker.get(key)
        return shlex.split(text) if isinstance(text, str) else []

    return main_argv(
        image.config,
        str(docker.get("configType", "default")),
        words("customEntrypoint"),
        words("customCommand"),
    )
