"""Request-body checks for the emulator's REST routes, and the ids derived from names.

(Over 500 lines on purpose: the API's body rules and their shared helpers read best together.)

Each check collects every problem it finds as ``{"path": [...], "message": ...}`` (the shape
both official clients pass through untouched) and raises one :class:`ApiValidationError`
whose message names the first few problems, so a caller sees what was wrong and where.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from pytest_northflank.emulator.health_checks import (
    HealthCheck,
    check_health_checks,
    readiness_probe,
)
from pytest_northflank.errors import ApiValidationError

# Northflank docs (northflank-api.md section 2.2).
SERVICE_NAME_RE = re.compile(r"^[a-zA-Z]((-|\s)?[a-zA-Z0-9]+((-|\s)[a-zA-Z0-9]+)*)?$")
TAG_NAME_RE = re.compile(r"^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$")
PLAN_RE = re.compile(r"^[A-Za-z0-9-]+$")
STAGE_ID_RE = re.compile(r"^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$")
# Kubernetes' rule for environment variable names.
ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
# A Docker image reference: [registry[:port]/]path[:tag][@digest], path components lower-case.
IMAGE_RE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
NAME_MIN, NAME_MAX = 3, 54
DESCRIPTION_MAX = 200
TAG_NAME_MAX = 100
MAX_INSTANCES = 1  # the emulator runs one container per service
# The deployment plans of Northflank's cloud (docs: "Compute Plans and Quota"); an unknown plan
# is refused as the API refuses it, so a typo in --nf-plan fails here too, not only on the API.
DEPLOYMENT_PLANS = (
    "nf-compute-10", "nf-compute-20", "nf-compute-50", "nf-compute-100-1", "nf-compute-100-2",
    "nf-compute-100-4", "nf-compute-200", "nf-compute-200-4", "nf-compute-200-8",
    "nf-compute-200-16", "nf-compute-400", "nf-compute-400-16", "nf-compute-800-8",
    "nf-compute-800-16", "nf-compute-800-24", "nf-compute-800-32", "nf-compute-800-40",
)  # fmt: skip

DOCKER_CONFIG_TYPES = (
    "default",
    "customEntrypoint",
    "customCommand",
    "customEntrypointCustomCommand",
)
PORT_PROTOCOLS = ("HTTP", "HTTP/2", "TCP", "UDP")
# The image's own command when the image is not available (host userland): keep it alive.
IMAGE_DEFAULT_ARGV = ("sleep", "infinity")

SERVICE_FIELDS = {
    "name", "description", "stageId", "tags", "billing", "infrastructure", "deployment",
    "ports", "runtimeEnvironment", "runtimeFiles", "healthChecks", "loadBalancing",
    "autoscaling", "createOptions",
}  # fmt: skip
DEPLOYMENT_FIELDS = {
    "instances", "type", "external", "internal", "docker", "buildpack", "storage", "strategy",
    "zonalRedundancy", "gpu", "gracePeriodSeconds", "gradualRolloutStrategyId", "ssh",
    "metadata", "volumes", "containerSnapshot",
}  # fmt: skip
TAG_FIELDS = {
    "name", "description", "color", "useSpotNodes", "useOnDemandNodes", "nodeAffinities",
    "useAsInfrastructureLabel", "sandboxing",
}  # fmt: skip


def derive_id(name: str) -> str:
    """The id Northflank derives from a name: lower-case, each separator becomes ``-``."""
    return re.sub(r"[\s-]", "-", name.strip()).lower()


class Problems:
    """Collects validation problems; :meth:`raise_if_any` turns them into one 400."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append({"path": path.split(".") if path else [], "message": message})

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = "; ".join(
            f"{'.'.join(str(p) for p in item['path']) or 'body'}: {item['message']}"
            for item in self.items[:3]
        )
        more = f" (and {len(self.items) - 3} more)" if len(self.items) > 3 else ""
        raise ApiValidationError(
            f"Validation error: {shown}{more}", status=400, details=list(self.items)
        )


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)  # fmt: skip


def is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _unknown_fields(problems: Problems, obj: Mapping[str, Any], known: set[str], at: str) -> None:
    for key in obj:
        if key not in known:
            problems.add(f"{at}.{key}" if at else str(key), "is not allowed")


def _object(problems: Problems, value: Any, path: str, *, required: bool) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        problems.add(path, f"must be an object, got {type_name(value)}")
        return {}
    return value


def _string(problems: Problems, value: Any, path: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            problems.add(path, "is required")
        return None
    if not isinstance(value, str):
        problems.add(path, f"must be a string, got {type_name(value)}")
        return None
    return value


def _boolean(problems: Problems, value: Any, path: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        problems.add(path, f"must be a boolean, got {type_name(value)}")
        return None
    return value


def check_name(problems: Problems, value: Any, path: str = "name") -> str | None:
    name = _string(problems, value, path, required=True)
    if name is None:
        return None
    if not NAME_MIN <= len(name) <= NAME_MAX:
        problems.add(path, f"must be {NAME_MIN}-{NAME_MAX} characters long, got {len(name)}")
    elif not SERVICE_NAME_RE.match(name):
        problems.add(
            path,
            f"{name!r} does not match {SERVICE_NAME_RE.pattern}: start with a letter, then "
            "letters and digits in groups separated by a single '-' or space",
        )
    return name


def check_description(problems: Problems, value: Any, path: str = "description") -> str | None:
    text = _string(problems, value, path)
    if text is None:
        return None
    if len(text) > DESCRIPTION_MAX:
        problems.add(path, f"must be at most {DESCRIPTION_MAX} characters, got {len(text)}")
    elif not text.isprintable():
        problems.add(path, "must contain printable characters only")
    return text


def check_tag_name(problems: Problems, value: Any, path: str) -> str | None:
    name = _string(problems, value, path, required=True)
    if name is None:
        return None
    if not 1 <= len(name) <= TAG_NAME_MAX:
        problems.add(path, f"must be 1-{TAG_NAME_MAX} characters long, got {len(name)}")
    elif not TAG_NAME_RE.match(name):
        problems.add(
            path, f"{name!r} does not match {TAG_NAME_RE.pattern} (letters and digits "
            "separated by single '-')"
        )  # fmt: skip
    return name


def check_plan(problems: Problems, plan: str, path: str) -> None:
    if not PLAN_RE.match(plan):
        problems.add(path, f"{plan!r} does not match {PLAN_RE.pattern}")
    elif plan not in DEPLOYMENT_PLANS:
        problems.add(
            path, f"{plan!r} is not a deployment plan; the plans are {', '.join(DEPLOYMENT_PLANS)}"
        )


def _split(problems: Problems, text: str, path: str) -> list[str]:
    try:
        words = shlex.split(text)
    except ValueError as exc:
        problems.add(path, f"cannot be split into arguments: {exc}")
        return []
    if not words:
        problems.add(path, "must not be empty")
    return words


@dataclass
class ServiceSpec:
    """A validated ``POST .../services/deployment`` body."""

    name: str
    id: str
    description: str | None
    tags: list[str]
    plan: str
    image: str
    docker: dict[str, Any]
    argv: list[str]  #: the main command on the host's userland (image not available)
    instances: int
    env: dict[str, str]
    grace_period: float | None
    # Accepted and echoed back, with no effect in the emulator (no network, no scheduler).
    echoed: dict[str, Any] = field(default_factory=dict)
    deployment_echo: dict[str, Any] = field(default_factory=dict)
    ports: list[dict[str, Any]] = field(default_factory=list)
    credentials: str | None = None  #: deployment.external.credentials (a saved credential id)
    #: The ``readinessProbe`` of ``healthChecks``, run by the emulator (others are echoed).
    readiness: HealthCheck | None = None


def check_service_body(body: Any) -> ServiceSpec:
    """Validate a create-deployment-service body (raises :class:`ApiValidationError`)."""
    problems = Problems()
    body = _object(problems, body, "", required=True)
    problems.raise_if_any()
    _unknown_fields(problems, body, SERVICE_FIELDS, "")
    name = check_name(problems, body.get("name"))
    description = check_description(problems, body.get("description"))
    if body.get("stageId") is not None:
        stage = _string(problems, body["stageId"], "stageId")
        if stage is not None and not (3 <= len(stage) <= 100 and STAGE_ID_RE.match(stage)):
            problems.add("stageId", f"must be 3-100 characters matching {STAGE_ID_RE.pattern}")

    tags: list[str] = []
    raw_tags = body.get("tags")
    if raw_tags is not None:
        if not isinstance(raw_tags, list):
            problems.add("tags", f"must be an array of tag names, got {type_name(raw_tags)}")
        else:
            for index, value in enumerate(raw_tags):
                tag = check_tag_name(problems, value, f"tags.{index}")
                if tag is not None:
                    tags.append(tag)

    billing = _object(problems, body.get("billing"), "billing", required=True)
    _unknown_fields(problems, billing, {"deploymentPlan", "gpu"}, "billing")
    plan = _string(problems, billing.get("deploymentPlan"), "billing.deploymentPlan", required=True)
    if plan is not None:
        check_plan(problems, plan, "billing.deploymentPlan")
    if isinstance(billing.get("gpu"), dict) and billing["gpu"].get("enabled"):
        problems.add("billing.gpu", "GPUs are not available on the emulator")

    deployment = _object(problems, body.get("deployment"), "deployment", required=True)
    _unknown_fields(problems, deployment, DEPLOYMENT_FIELDS, "deployment")
    instances = deployment.get("instances")
    if instances is None:
        problems.add("deployment.instances", "is required")
    elif not is_int(instances):
        problems.add("deployment.instances", f"must be an integer, got {type_name(instances)}")
    elif instances < 0:
        problems.add("deployment.instances", f"must be >= 0, got {instances}")
    elif instances > MAX_INSTANCES:
        problems.add(
            "deployment.instances",
            f"the emulator runs at most {MAX_INSTANCES} instance per service, got {instances}",
        )
    if deployment.get("type") not in (None, "deployment", "statefulSet"):
        problems.add("deployment.type", "must be 'deployment' or 'statefulSet'")

    image, credentials = _check_image_source(problems, deployment)
    docker, argv = check_docker(problems, deployment.get("docker"))
    if deployment.get("buildpack") is not None:
        problems.add("deployment.buildpack", "buildpack settings need a build; the emulator "
                     "runs external images only")  # fmt: skip
    if isinstance(deployment.get("gpu"), dict) and deployment["gpu"].get("enabled"):
        problems.add("deployment.gpu", "GPUs are not available on the emulator")
    snapshot = deployment.get("containerSnapshot")
    if isinstance(snapshot, dict) and snapshot.get("restoreFrom") is not None:
        problems.add("deployment.containerSnapshot.restoreFrom", "snapshots are not available "
                     "on the emulator")  # fmt: skip
    grace = deployment.get("gracePeriodSeconds")
    if grace is not None and (not is_int(grace) or grace < 0):
        problems.add("deployment.gracePeriodSeconds", "must be an integer >= 0")
        grace = None

    env = check_runtime_env(problems, body.get("runtimeEnvironment"))
    if body.get("runtimeFiles"):
        problems.add("runtimeFiles", "runtime files are not supported by the emulator; write "
                     "files through exec instead")  # fmt: skip
    ports = _check_ports(problems, body.get("ports"))
    readiness = readiness_probe(check_health_checks(problems.add, body.get("healthChecks")))
    create_options = _object(problems, body.get("createOptions"), "createOptions", required=False)
    _unknown_fields(problems, create_options, {"volumesToAttach", "expiryTime"}, "createOptions")
    if create_options.get("volumesToAttach"):
        problems.add("createOptions.volumesToAttach", "volumes are not available on the emulator")
    expiry = create_options.get("expiryTime")
    if expiry is not None and (not is_int(expiry) or expiry <= 0):
        problems.add("createOptions.expiryTime", "must be a positive integer")
    problems.raise_if_any()

    assert name is not None
    assert plan is not None
    assert image is not None
    assert isinstance(instances, int)
    echoed = {
        key: body[key]
        for key in ("stageId", "infrastructure", "healthChecks", "loadBalancing", "autoscaling")
        if body.get(key) is not None
    }
    if expiry is not None:
        echoed["expiryTime"] = expiry
    deployment_echo: dict[str, Any] = {
        key: deployment[key]
        for key in ("type", "storage", "strategy", "zonalRedundancy", "gracePeriodSeconds",
                    "gradualRolloutStrategyId", "ssh", "metadata")
        if key in deployment
    }  # fmt: skip
    return ServiceSpec(
        name=name,
        id=derive_id(name),
        description=description,
        tags=tags,
        plan=plan,
        image=image,
        docker=docker,
        argv=argv,
        instances=instances,
        env=env,
        grace_period=float(grace) if grace is not None else None,
        echoed=echoed,
        deployment_echo=deployment_echo,
        ports=ports,
        credentials=credentials,
        readiness=readiness,
    )


def _check_image_source(
    problems: Problems, deployment: dict[str, Any]
) -> tuple[str | None, str | None]:
    """The image reference and the saved registry credential id."""
    if deployment.get("internal") is not None:
        problems.add("deployment.internal", "builds are not available on the emulator; use "
                     "deployment.external.imagePath")  # fmt: skip
        return None, None
    if deployment.get("external") is None:
        problems.add("deployment.external.imagePath", "is required (the emulator runs external "
                     "images only)")  # fmt: skip
        return None, None
    external = _object(problems, deployment["external"], "deployment.external", required=True)
    _unknown_fields(problems, external, {"imagePath", "credentials"}, "deployment.external")
    credentials = _string(problems, external.get("credentials"), "deployment.external.credentials")
    image = _string(problems, external.get("imagePath"), "deployment.external.imagePath",
                    required=True)  # fmt: skip
    if image is not None and not IMAGE_RE.match(image):
        problems.add("deployment.external.imagePath", f"{image!r} is not a valid image reference")
    return image, credentials


def check_docker(problems: Problems, value: Any) -> tuple[dict[str, Any], list[str]]:
    """The docker settings to echo, and the container's main command (exec form, as on
    Northflank: ``entrypoint + command``, each split like a shell would)."""
    path = "deployment.docker"
    if value is None:
        return {"configType": "default"}, list(IMAGE_DEFAULT_ARGV)
    docker = _object(problems, value, path, required=True)
    _unknown_fields(problems, docker, {"configType", "customEntrypoint", "customCommand"}, path)
    config_type = _string(problems, docker.get("configType"), f"{path}.configType", required=True)
    if config_type is None:
        return {}, []
    if config_type not in DOCKER_CONFIG_TYPES:
        problems.add(f"{path}.configType", f"must be one of {', '.join(DOCKER_CONFIG_TYPES)}")
        return {}, []
    echo: dict[str, Any] = {"configType": config_type}
    argv: list[str] = []
    if config_type in ("customEntrypoint", "customEntrypointCustomCommand"):
        entrypoint = _string(problems, docker.get("customEntrypoint"),
                             f"{path}.customEntrypoint", required=True)  # fmt: skip
        if entrypoint is not None:
            echo["customEntrypoint"] = entrypoint
            argv += _split(problems, entrypoint, f"{path}.customEntrypoint")
    if config_type in ("customCommand", "customEntrypointCustomCommand"):
        command = _string(problems, docker.get("customCommand"), f"{path}.customCommand",
                          required=True)  # fmt: skip
        if command is not None:
            echo["customCommand"] = command
            argv += _split(problems, command, f"{path}.customCommand")
    if config_type == "default":
        argv = list(IMAGE_DEFAULT_ARGV)
    return echo, argv


def check_runtime_env(problems: Problems, value: Any) -> dict[str, str]:
    env = _object(problems, value, "runtimeEnvironment", required=False)
    checked: dict[str, str] = {}
    for key, item in env.items():
        path = f"runtimeEnvironment.{key}"
        if not ENV_NAME_RE.match(key):
            problems.add(path, f"{key!r} is not a valid environment variable name")
        elif not isinstance(item, str):
            problems.add(path, f"must be a string, got {type_name(item)}")
        elif "\0" in item:
            problems.add(path, "must not contain a NUL character")
        else:
            checked[key] = item
    return checked


def _check_ports(problems: Problems, value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add("ports", f"must be an array, got {type_name(value)}")
        return []
    ports: list[dict[str, Any]] = []
    for index, raw in enumerate(value):
        path = f"ports.{index}"
        port = _object(problems, raw, path, required=True)
        if not port:
            continue
        name = _string(problems, port.get("name"), f"{path}.name", required=True)
        number = port.get("internalPort")
        if not is_int(number) or not 1 <= number <= 65535:
            problems.add(f"{path}.internalPort", "must be an integer from 1 to 65535")
        if port.get("protocol") not in PORT_PROTOCOLS:
            problems.add(f"{path}.protocol", f"must be one of {', '.join(PORT_PROTOCOLS)}")
        _boolean(problems, port.get("public"), f"{path}.public")
        if name is not None:
            ports.append({"id": name, "public": False, "domains": [], **port, "name": name})
    return ports


@dataclass
class TagSpec:
    name: str
    id: str
    fields: dict[str, Any]


def check_tag_body(body: Any, *, partial: bool = False) -> TagSpec | dict[str, Any]:
    """Validate a tag body; ``partial`` (PATCH) returns just the fields to change."""
    problems = Problems()
    body = _object(problems, body, "", required=True)
    problems.raise_if_any()
    _unknown_fields(problems, body, TAG_FIELDS, "")
    name = None
    if not partial or "name" in body:
        name = check_tag_name(problems, body.get("name"), "name")
    check_description(problems, body.get("description"))
    color = _string(problems, body.get("color"), "color")
    if color is not None and not re.fullmatch(r"#[0-9a-fA-F]{6}", color):
        problems.add("color", f"must be a hex colour like '#1a2b3c', got {color!r}")
    for flag in ("useSpotNodes", "useOnDemandNodes", "useAsInfrastructureLabel"):
        _boolean(problems, body.get(flag), flag)
    if body.get("nodeAffinities") is not None and not isinstance(body["nodeAffinities"], list):
        problems.add("nodeAffinities", "must be an array")
    _object(problems, body.get("sandboxing"), "sandboxing", required=False)
    problems.raise_if_any()
    fields = {key: value for key, value in body.items() if value is not None}
    if partial:
        return fields
    assert name is not None
    return TagSpec(name=name, id=derive_id(name), fields=fields)


@dataclass
class ProjectSpec:
    name: str
    id: str
    description: str | None
    region: str | None


def check_project_body(body: Any) -> ProjectSpec:
    problems = Problems()
    body = _object(problems, body, "", required=True)
    problems.raise_if_any()
    _unknown_fields(problems, body, {"name", "description", "color", "region", "clusterId",
                                     "networking"}, "")  # fmt: skip
    name = check_name(problems, body.get("name"))
    description = check_description(problems, body.get("description"))
    region = _string(problems, body.get("region"), "region")
    _string(problems, body.get("clusterId"), "clusterId")
    _string(problems, body.get("color"), "color")
    problems.raise_if_any()
    assert name is not None
    return ProjectSpec(name=name, id=derive_id(name), description=description, region=region)


def check_instances_body(body: Any, *, what: str) -> dict[str, Any]:
    """The body of resume/scale: an object whose ``instances`` (if any) is 0..MAX."""
    problems = Problems()
    body = _object(problems, body, "", required=False)
    allowed = {
        "resume": {"instances", "disabledCI", "disabledCD", "enableAutoscaling"},
        "scale": {"instances", "deploymentPlan", "storage", "gracePeriodSeconds"},
    }[what]
    _unknown_fields(problems, body, allowed, "")
    instances = body.get("instances")
    if instances is not None:
        if not isinstance(instances, int) or isinstance(instances, bool):
            problems.add("instances", f"must be an integer, got {type_name(instances)}")
        elif not 0 <= instances <= MAX_INSTANCES:
            problems.add(
                "instances", f"must be from 0 to {MAX_INSTANCES} on the emulator, got {instances}"
            )
    plan = body.get("deploymentPlan")
    if isinstance(plan, str):
        check_plan(problems, plan, "deploymentPlan")
    elif plan is not None:
        problems.add("deploymentPlan", f"must be a plan id, got {type_name(plan)}")
    grace = body.get("gracePeriodSeconds")
    if grace is not None and (not is_int(grace) or grace < 0):
        problems.add("gracePeriodSeconds", "must be an integer >= 0")
    problems.raise_if_any()
    return dict(body)
