"""Secret groups ("project secrets", contract section 13): validation, storage, inheritance.

A group's variables reach every service and job of its project, or, when
``restrictions.restricted`` is true, only the workloads named in ``restrictions.nfObjects``
or carrying its ``restrictions.tags`` (all of them with ``tagMatchCondition: "and"``, any with
``"or"``, the default). Between groups the higher ``priority`` wins; a workload's own
variables win over every group. Values never appear in list answers, logs or errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pytest_northflank.emulator.validation import (
    ENV_NAME_RE,
    Problems,
    check_description,
    check_tag_name,
    derive_id,
    type_name,
)
from pytest_northflank.errors import ConflictError, NotFoundError

GROUP_NAME_RE = re.compile(r"^[a-zA-Z0-9]+((-|\s)[a-zA-Z0-9]+)*$")
GROUP_NAME_MIN, GROUP_NAME_MAX = 3, 100
SECRET_TYPES = ("environment-arguments", "environment", "arguments")
GROUP_TYPES = ("secret", "config")
OBJECT_TYPES = ("service", "job")
GROUP_FIELDS = {
    "name", "description", "type", "secretType", "priority", "tags", "stageId", "restrictions",
    "secrets", "addonDependencies", "externalAddonDependencies",
}  # fmt: skip
RESTRICTION_FIELDS = {"restricted", "nfObjects", "tags", "tagMatchCondition", "stageIds"}
Mode = Literal["create", "patch", "update"]
WorkloadKind = Literal["service", "job"]


@dataclass
class SecretGroup:
    project_id: str
    id: str
    name: str
    secret_type: str
    priority: int
    created_at: datetime
    updated_at: datetime
    type: str = "secret"
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    restrictions: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def applies_to(self, kind: WorkloadKind, object_id: str, tags: list[str]) -> bool:
        """Whether this group's runtime variables reach the workload."""
        if not self.secret_type.startswith("environment"):
            return False
        rules = self.restrictions
        if not rules.get("restricted"):
            return True
        listed = {(o.get("type"), o.get("id")) for o in rules.get("nfObjects") or []}
        if (kind, object_id) in listed:
            return True
        wanted = list(rules.get("tags") or [])
        if not wanted:
            return False
        if rules.get("tagMatchCondition") == "and":
            return all(tag in tags for tag in wanted)
        return any(tag in tags for tag in wanted)


@dataclass
class Inherited:
    value: str
    group_id: str
    priority: int
    overriding: list[dict[str, Any]] = field(default_factory=list)


def check_group_body(body: Any, mode: Mode) -> dict[str, Any]:
    """A validated create/put (``create``), PATCH (``patch``) or POST update body."""
    problems = Problems()
    if not isinstance(body, dict):
        problems.add("", f"must be an object, got {type_name(body)}")
        problems.raise_if_any()
    assert isinstance(body, dict)
    allowed = set(GROUP_FIELDS)
    if mode != "create":
        allowed.discard("name")
    if mode == "update":
        allowed -= {"tags", "stageId"}
    for key in body:
        if key not in allowed:
            problems.add(str(key), "is not allowed")
    if mode == "create":
        name = body.get("name")
        if not isinstance(name, str):
            problems.add("name", "is required" if name is None else "must be a string")
        elif not GROUP_NAME_MIN <= len(name) <= GROUP_NAME_MAX or not GROUP_NAME_RE.match(name):
            problems.add(
                "name",
                f"must be {GROUP_NAME_MIN}-{GROUP_NAME_MAX} characters matching "
                f"{GROUP_NAME_RE.pattern}",
            )
        for required in ("secretType", "priority"):
            if body.get(required) is None:
                problems.add(required, "is required")
    if body.get("secretType") is not None and body["secretType"] not in SECRET_TYPES:
        problems.add("secretType", f"must be one of {', '.join(SECRET_TYPES)}")
    if body.get("type") is not None and body["type"] not in GROUP_TYPES:
        problems.add("type", f"must be one of {', '.join(GROUP_TYPES)}")
    priority = body.get("priority")
    if priority is not None and (
        not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 100
    ):
        problems.add("priority", "must be an integer from 0 to 100")
    check_description(problems, body.get("description"))
    _check_tags(problems, body.get("tags"), "tags")
    _check_restrictions(problems, body.get("restrictions"))
    _check_secrets(problems, body.get("secrets"))
    problems.raise_if_any()
    return body


def _check_tags(problems: Problems, value: Any, path: str) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        problems.add(path, f"must be an array of tag names, got {type_name(value)}")
        return
    for index, tag in enumerate(value):
        check_tag_name(problems, tag, f"{path}.{index}")


def _check_restrictions(problems: Problems, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        problems.add("restrictions", f"must be an object, got {type_name(value)}")
        return
    for key in value:
        if key not in RESTRICTION_FIELDS:
            problems.add(f"restrictions.{key}", "is not allowed")
    if value.get("restricted") is not None and not isinstance(value["restricted"], bool):
        problems.add("restrictions.restricted", "must be a boolean")
    objects = value.get("nfObjects")
    if objects is not None:
        if not isinstance(objects, list):
            problems.add("restrictions.nfObjects", "must be an array")
        else:
            for index, item in enumerate(objects):
                path = f"restrictions.nfObjects.{index}"
                if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                    problems.add(path, "must be an object with a string id")
                elif item.get("type") not in OBJECT_TYPES:
                    problems.add(f"{path}.type", "must be service or job")
    _check_tags(problems, value.get("tags"), "restrictions.tags")
    condition = value.get("tagMatchCondition")
    if condition is not None and condition not in ("and", "or"):
        problems.add("restrictions.tagMatchCondition", "must be and or or")


def _check_secrets(problems: Problems, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        problems.add("secrets", f"must be an object, got {type_name(value)}")
        return
    for key in value:
        if key not in ("variables", "files", "dockerSecretMounts"):
            problems.add(f"secrets.{key}", "is not allowed")
    check_variables(problems, value.get("variables"), "secrets.variables")
    check_files(problems, value.get("files"), "secrets.files")


def check_variables(problems: Problems, value: Any, path: str) -> None:
    """Variables: names the API takes, string values (the values are never echoed)."""
    if value is None:
        return
    if not isinstance(value, dict):
        problems.add(path, f"must be an object, got {type_name(value)}")
        return
    for key, item in value.items():
        if not ENV_NAME_RE.match(key):
            problems.add(f"{path}.{key}", f"{key!r} is not a valid variable name")
        elif not isinstance(item, str):
            problems.add(f"{path}.{key}", f"must be a string, got {type_name(item)}")
        elif "\0" in item:
            problems.add(f"{path}.{key}", "must not contain a NUL character")


def check_files(problems: Problems, value: Any, path: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        problems.add(path, f"must be an object, got {type_name(value)}")
        return
    for file_path, item in value.items():
        if not file_path.startswith("/"):
            problems.add(f"{path}.{file_path}", "must be an absolute path")
        elif not isinstance(item, dict) or not isinstance(item.get("data"), str):
            problems.add(f"{path}.{file_path}", "must be an object with base64 data")


class SecretGroups:
    """The secret groups of every project."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str], SecretGroup] = {}

    def clear(self) -> None:
        self.groups.clear()

    def of_project(self, project_id: str) -> list[SecretGroup]:
        return [g for (p, _), g in self.groups.items() if p == project_id]

    def get(self, project_id: str, group_id: str) -> SecretGroup:
        try:
            return self.groups[(project_id, group_id)]
        except KeyError:
            raise NotFoundError(
                f"Secret group {group_id!r} not found in project {project_id!r}", status=404
            ) from None

    def create(
        self, project_id: str, body: dict[str, Any], now: datetime, *, upsert: bool
    ) -> SecretGroup:
        group_id = derive_id(body["name"])
        existing = self.groups.get((project_id, group_id))
        if existing is not None:
            if not upsert:
                raise ConflictError(
                    f"A secret group with the id {group_id!r} already exists in project "
                    f"{project_id!r}",
                    status=409,
                )
            self.change(existing, {k: v for k, v in body.items() if k != "name"}, now)
            return existing
        group = SecretGroup(
            project_id=project_id,
            id=group_id,
            name=body["name"],
            secret_type=body["secretType"],
            priority=body["priority"],
            created_at=now,
            updated_at=now,
        )
        self.change(group, body, now)
        self.groups[(project_id, group_id)] = group
        return group

    @staticmethod
    def change(group: SecretGroup, body: dict[str, Any], now: datetime) -> None:
        """Apply a checked body: scalars and objects replace, absent fields stay."""
        if body.get("secretType") is not None:
            group.secret_type = body["secretType"]
        if body.get("priority") is not None:
            group.priority = body["priority"]
        if body.get("type") is not None:
            group.type = body["type"]
        if "description" in body:
            group.description = body["description"]
        if body.get("tags") is not None:
            group.tags = list(body["tags"])
        if body.get("restrictions") is not None:
            group.restrictions = dict(body["restrictions"])
        secrets = body.get("secrets") or {}
        if secrets.get("variables") is not None:
            group.variables = dict(secrets["variables"])
        if secrets.get("files") is not None:
            group.files = dict(secrets["files"])
        for key in ("stageId", "addonDependencies", "externalAddonDependencies"):
            if key in body:
                group.extra[key] = body[key]
        group.updated_at = now

    def delete(self, group: SecretGroup) -> None:
        self.groups.pop((group.project_id, group.id), None)

    def inherited(
        self, project_id: str, kind: WorkloadKind, object_id: str, tags: list[str]
    ) -> dict[str, Inherited]:
        """Variables the workload inherits, each from the group of highest priority."""
        chosen: dict[str, Inherited] = {}
        groups = sorted(
            (g for g in self.of_project(project_id) if g.applies_to(kind, object_id, tags)),
            key=lambda g: (-g.priority, g.id),
        )
        for group in groups:
            for key, value in group.variables.items():
                if key in chosen:
                    chosen[key].overriding.append(
                        {"value": value, "inheritedFrom": group.id, "priority": group.priority}
                    )
                else:
                    chosen[key] = Inherited(value, group.id, group.priority)
        return chosen

    def environment(
        self, project_id: str, kind: WorkloadKind, object_id: str, tags: list[str]
    ) -> dict[str, str]:
        """The inherited variables as a plain environment."""
        found = self.inherited(project_id, kind, object_id, tags)
        return {key: item.value for key, item in found.items()}


def group_summary(group: SecretGroup) -> dict[str, Any]:
    """A ``list secrets`` entry: no values."""
    summary: dict[str, Any] = {
        "id": group.id,
        "projectId": group.project_id,
        "name": group.name,
        "tags": list(group.tags),
        "type": group.type,
        "secretType": group.secret_type,
        "priority": group.priority,
        "restrictions": restrictions_view(group.restrictions),
    }
    if group.description is not None:
        summary["description"] = group.description
    return summary


def restrictions_view(rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "restricted": bool(rules.get("restricted", False)),
        "nfObjects": list(rules.get("nfObjects") or []),
        "tags": list(rules.get("tags") or []),
        "tagMatchCondition": rules.get("tagMatchCondition", "or"),
    }
