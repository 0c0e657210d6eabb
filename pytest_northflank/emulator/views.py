"""JSON shapes of the emulator's answers (contract sections 2.1-2.8)."""

from __future__ import annotations

from typing import Any

from pytest_northflank.emulator.state import (
    CLUSTER,
    REGION,
    EmulatorState,
    ProjectRecord,
    ServiceRecord,
    TagRecord,
    iso,
)
from pytest_northflank.emulator.updates import ports_view

OWNER = "emulator"


def app_id(service: ServiceRecord) -> str:
    return f"/{OWNER}/{service.project_id}/{service.id}"


def deployment_status(service: ServiceRecord) -> dict[str, Any]:
    status: dict[str, Any] = {
        "status": service.status,
        "reason": service.status_reason,
        "lastTransitionTime": iso(service.last_transition),
    }
    if service.status_message:
        status["message"] = service.status_message
    return status


def service_summary(service: ServiceRecord) -> dict[str, Any]:
    """An entry of ``GET .../services``."""
    summary: dict[str, Any] = {
        "id": service.id,
        "appId": app_id(service),
        "projectId": service.project_id,
        "name": service.spec.name,
        "tags": list(service.spec.tags),
        "serviceType": "deployment",
        "disabledCI": True,
        "disabledCD": True,
        "servicePaused": service.paused,
        "status": {"deployment": deployment_status(service)},
    }
    if service.spec.description is not None:
        summary["description"] = service.spec.description
    return summary


def service_detail(service: ServiceRecord) -> dict[str, Any]:
    """``GET .../services/{id}`` and the create answer."""
    spec = service.spec
    deployment: dict[str, Any] = {
        "region": REGION,
        "instances": service.instances,
        "external": {
            "imagePath": spec.image,
            "registryProvider": "dockerhub",
            "privateImage": False,
        },
        "docker": dict(spec.docker),
        "imageUrl": spec.image,
        **spec.deployment_echo,
    }
    return {
        **service_summary(service),
        "createdAt": iso(service.created_at),
        "updatedAt": iso(service.updated_at),
        "billing": {"deploymentPlan": service.plan},
        "deployment": deployment,
        "ports": ports_with_dns(service),
        "runtimeEnvironment": dict(spec.env),
        "cluster": dict(CLUSTER),
        "lastTransitionTime": iso(service.last_transition),
        **spec.echoed,
    }


def ports_with_dns(service: ServiceRecord) -> list[dict[str, Any]]:
    """The ports as answers show them; a published public HTTP port gets ``dns``: its
    ``127.0.0.1`` listener (plain HTTP), where Northflank gives a ``code.run`` name."""
    instance = service.instance
    listeners = instance.published.listeners if instance and instance.published else {}
    views = []
    for port, view in zip(service.spec.ports, ports_view(service.spec.ports), strict=True):
        listener = listeners.get(port.get("internalPort", 0)) if port.get("public") else None
        if listener is not None:
            view["dns"] = f"127.0.0.1:{listener}"
        views.append(view)
    return views


def container_entries(state: EmulatorState, service: ServiceRecord) -> list[dict[str, Any]]:
    instance = service.instance
    if instance is None:
        return []
    return [
        {
            "name": instance.name,
            "status": instance.task_status(state.is_ready(service)),
            "createdAt": int(instance.created_at.timestamp()),
            "updatedAt": int(service.last_transition.timestamp()),
            "nodeName": "nf-emulator",
        }
    ]


def project_summary(project: ProjectRecord) -> dict[str, Any]:
    summary: dict[str, Any] = {"id": project.id, "name": project.name}
    if project.description is not None:
        summary["description"] = project.description
    return summary


def project_detail(
    state: EmulatorState, project: ProjectRecord, jobs: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        **project_summary(project),
        "createdAt": iso(project.created_at),
        "deployment": {"region": project.region},
        "cluster": dict(CLUSTER),
        "lifecycleStatus": "created",
        "services": [
            {
                "id": service.id,
                "appId": app_id(service),
                "name": service.spec.name,
                "serviceType": "deployment",
                **(
                    {"description": service.spec.description}
                    if service.spec.description is not None
                    else {}
                ),
            }
            for service in state.project_services(project.id)
        ],
        "jobs": list(jobs or []),
        "addons": [],
    }


def tag_view(tag: TagRecord) -> dict[str, Any]:
    return {
        **tag.fields,
        "id": tag.id,
        "name": tag.name,
        "useSpotNodes": tag.fields.get("useSpotNodes", False),
        "useOnDemandNodes": tag.fields.get("useOnDemandNodes", False),
        "createdAt": iso(tag.created_at),
        "updatedAt": iso(tag.updated_at),
    }
