"""Unit tests of the emulator's request checks and name-derived ids."""

from __future__ import annotations

from typing import Any

import pytest
from emulator_testing import service_body
from hypothesis import given
from hypothesis import strategies as st

from pytest_northflank.emulator.validation import (
    IMAGE_DEFAULT_ARGV,
    SERVICE_NAME_RE,
    TagSpec,
    check_instances_body,
    check_project_body,
    check_service_body,
    check_tag_body,
    derive_id,
)
from pytest_northflank.errors import ApiValidationError


def problems(body: Any) -> list[dict[str, Any]]:
    with pytest.raises(ApiValidationError) as caught:
        check_service_body(body)
    assert caught.value.status == 400
    details: list[dict[str, Any]] = caught.value.details
    assert caught.value.api_message.startswith("Validation error: ")
    return details


def paths(body: Any) -> list[str]:
    return [".".join(item["path"]) for item in problems(body)]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Example Service", "example-service"),
        ("py sandbox", "py-sandbox"),
        ("abc", "abc"),
        ("My-App 2", "my-app-2"),
        ("A1b2C3", "a1b2c3"),
    ],
)
def test_ids_come_from_names(name: str, expected: str) -> None:
    spec = check_service_body(service_body(name))
    assert (spec.name, spec.id) == (name, expected)


@pytest.mark.parametrize(
    "name",
    ["ab", "x" * 55, "1abc", "-abc", "abc-", "abc--def", "ab  cd", "abc_def", "abc.def", ""],
)
def test_bad_service_names_are_refused_with_the_rule(name: str) -> None:
    found = problems(service_body(name))
    assert found[0]["path"] == ["name"]
    assert "3-54" in found[0]["message"] or "does not match" in found[0]["message"]


@given(st.from_regex(SERVICE_NAME_RE, fullmatch=True).filter(lambda n: 3 <= len(n) <= 54))
def test_every_valid_name_gives_an_id_of_lowercase_words(name: str) -> None:
    spec = check_service_body(service_body(name))
    assert spec.id == spec.id.lower()
    assert all(part.isalnum() for part in spec.id.split("-"))
    assert len(spec.id) == len(name)


def test_a_good_body_gives_argv_env_and_echoed_settings() -> None:
    body = service_body(
        "web one",
        "sh -c 'echo hi; sleep infinity'",
        runtimeEnvironment={"A": "1", "B_2": "two words"},
        tags=["spot-workload"],
        description="made by a test",
        ports=[{"name": "p01", "internalPort": 8080, "protocol": "HTTP"}],
        healthChecks=[],
    )
    spec = check_service_body(body)
    assert spec.argv == ["sh", "-c", "echo hi; sleep infinity"]
    assert spec.env == {"A": "1", "B_2": "two words"}
    assert spec.tags == ["spot-workload"]
    assert spec.ports[0]["id"] == "p01"
    assert spec.echoed == {"healthChecks": []}
    assert (spec.plan, spec.image, spec.instances) == ("nf-compute-20", "ubuntu:22.04", 1)


def test_the_image_default_command_keeps_the_container_alive() -> None:
    assert check_service_body(service_body("dflt", None)).argv == list(IMAGE_DEFAULT_ARGV)


def test_entrypoint_and_command_concatenate_in_exec_form() -> None:
    body = service_body("both")
    body["deployment"]["docker"] = {
        "configType": "customEntrypointCustomCommand",
        "customEntrypoint": "/bin/sh -c",
        "customCommand": "'echo $HOME; sleep 1'",
    }
    assert check_service_body(body).argv == ["/bin/sh", "-c", "echo $HOME; sleep 1"]


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda b: b.pop("billing"), "billing"),
        (lambda b: b["billing"].pop("deploymentPlan"), "billing.deploymentPlan"),
        (lambda b: b["billing"].update(deploymentPlan="nf compute"), "billing.deploymentPlan"),
        (lambda b: b["deployment"].pop("instances"), "deployment.instances"),
        (lambda b: b["deployment"].update(instances="1"), "deployment.instances"),
        (lambda b: b["deployment"].update(instances=True), "deployment.instances"),
        (lambda b: b["deployment"].update(instances=1.0), "deployment.instances"),
        (lambda b: b["deployment"].update(instances=-1), "deployment.instances"),
        (lambda b: b["deployment"].update(instances=2), "deployment.instances"),
        (lambda b: b["deployment"].pop("external"), "deployment.external.imagePath"),
        (lambda b: b["deployment"]["external"].update(imagePath="Ubuntu Latest"),
         "deployment.external.imagePath"),
        (lambda b: b["deployment"].update(internal={"id": "x"}), "deployment.internal"),
        (lambda b: b["deployment"]["docker"].update(configType="magic"),
         "deployment.docker.configType"),
        (lambda b: b["deployment"]["docker"].pop("customCommand"),
         "deployment.docker.customCommand"),
        (lambda b: b["deployment"]["docker"].update(customCommand="echo 'open"),
         "deployment.docker.customCommand"),
        (lambda b: b.update(runtimeEnvironment={"A": 1}), "runtimeEnvironment.A"),
        (lambda b: b.update(runtimeEnvironment={"A=B": "x"}), "runtimeEnvironment.A=B"),
        (lambda b: b.update(runtimeEnvironment=["A"]), "runtimeEnvironment"),
        (lambda b: b.update(tags="spot"), "tags"),
        (lambda b: b.update(tags=["bad tag"]), "tags.0"),
        (lambda b: b.update(description="x" * 201), "description"),
        (lambda b: b.update(description="line\nbreak"), "description"),
        (lambda b: b.update(runtimeFiles={"/a": {"data": ""}}), "runtimeFiles"),
        (lambda b: b.update(ports=[{"name": "p", "internalPort": 0, "protocol": "HTTP"}]),
         "ports.0.internalPort"),
        (lambda b: b.update(ports=[{"name": "p", "internalPort": 80, "protocol": "FTP"}]),
         "ports.0.protocol"),
        (lambda b: b.update(runtimeEnv={"A": "1"}), "runtimeEnv"),
        (lambda b: b["deployment"].update(image="x"), "deployment.image"),
        (lambda b: b.update(createOptions={"expiryTime": "soon"}), "createOptions.expiryTime"),
    ],
)  # fmt: skip
def test_each_bad_field_is_named_in_the_details(change: Any, path: str) -> None:
    body = service_body("checked", "sleep infinity")
    change(body)
    assert path in paths(body)


def test_every_problem_is_reported_at_once() -> None:
    body: dict[str, Any] = {"name": "x", "deployment": {"instances": "two"}}
    found = paths(body)
    assert {"name", "billing", "deployment.instances", "deployment.external.imagePath"} <= set(
        found
    )


@pytest.mark.parametrize("body", [None, [], "text", 3])
def test_a_body_that_is_not_an_object_is_refused(body: Any) -> None:
    assert problems(body)[0]["message"].startswith("must be an object")


def test_tag_bodies() -> None:
    spec = check_tag_body({"name": "spot-workload", "useSpotNodes": True})
    assert isinstance(spec, TagSpec)
    assert (spec.id, spec.fields["useSpotNodes"]) == ("spot-workload", True)
    with pytest.raises(ApiValidationError, match="useSpotNodes: must be a boolean"):
        check_tag_body({"name": "spot", "useSpotNodes": "yes"})
    with pytest.raises(ApiValidationError, match="name: 'a b'"):
        check_tag_body({"name": "a b"})
    with pytest.raises(ApiValidationError, match="colour"):
        check_tag_body({"name": "c", "color": "red"})
    assert check_tag_body({"useSpotNodes": False}, partial=True) == {"useSpotNodes": False}


def test_project_and_instances_bodies() -> None:
    project = check_project_body({"name": "My Project", "region": "europe-west"})
    assert (project.id, project.region) == ("my-project", "europe-west")
    with pytest.raises(ApiValidationError, match="name: is required"):
        check_project_body({})
    assert check_instances_body({}, what="resume") == {}
    assert check_instances_body({"instances": 0}, what="scale") == {"instances": 0}
    with pytest.raises(ApiValidationError, match="instances: must be from 0 to 1"):
        check_instances_body({"instances": 3}, what="scale")
    with pytest.raises(ApiValidationError, match="bogus: is not allowed"):
        check_instances_body({"bogus": 1}, what="resume")


def test_derive_id_turns_every_separator_into_a_dash() -> None:
    assert derive_id("A b\tc-D") == "a-b-c-d"
