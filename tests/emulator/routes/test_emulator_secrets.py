"""Secret groups on the emulator: CRUD, restrictions, injection into services at start."""

from __future__ import annotations

from typing import Any

from emulator_testing import PROJECT, Api, run_exec, unique_name

from pytest_northflank.emulator import EmulatorServer

SECRETS = f"/v1/projects/{PROJECT}/secrets"


def group(name: str, variables: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "secretType": "environment",
        "priority": 10,
        "secrets": {"variables": variables},
        **extra,
    }


def env_in(server: EmulatorServer, service_id: str, name: str) -> str:
    run = run_exec(server, service_id, command=["sh", "-c", f'printf %s "${name}"'], shell="none")
    return run.text()


def test_a_group_restricted_by_tag_reaches_tagged_services_only(
    api: Api, emulator_clean: EmulatorServer
) -> None:
    api.ok("POST", "/v1/tags", json={"name": "db"})
    api.ok(
        "POST",
        SECRETS,
        json=group(
            "db creds", {"DB_PASSWORD": "s3cret"}, restrictions={"restricted": True, "tags": ["db"]}
        ),
    )
    tagged = api.start(unique_name("tagged"), tags=["db"])["id"]
    untagged = api.start(unique_name("plain"))["id"]
    assert env_in(emulator_clean, tagged, "DB_PASSWORD") == "s3cret"
    assert env_in(emulator_clean, untagged, "DB_PASSWORD") == ""
    shown = api.ok("GET", f"/v1/projects/{PROJECT}/services/{tagged}/runtime-environment")
    assert shown["runtimeEnvironment"] == {"DB_PASSWORD": "s3cret"}
    own = api.ok(
        "GET",
        f"/v1/projects/{PROJECT}/services/{tagged}/runtime-environment",
        params={"show": "this"},
    )
    assert own["runtimeEnvironment"] == {}
    dump = api.request("GET", "/_emulator/state")
    assert "DB_PASSWORD" in dump.text
    assert "s3cret" not in dump.text


def test_priority_own_variables_and_service_restrictions(
    api: Api, emulator_clean: EmulatorServer
) -> None:
    name = unique_name("svc")
    api.ok("POST", SECRETS, json=group("low", {"A": "low", "B": "low"}, priority=1))
    api.ok("POST", SECRETS, json=group("high", {"A": "high"}, priority=50))
    api.ok(
        "POST",
        SECRETS,
        json=group(
            "only svc",
            {"C": "c"},
            restrictions={"restricted": True, "nfObjects": [{"id": name, "type": "service"}]},
        ),
    )
    service = api.start(name, runtimeEnvironment={"B": "own"})["id"]
    assert env_in(emulator_clean, service, "A") == "high"
    assert env_in(emulator_clean, service, "B") == "own"
    assert env_in(emulator_clean, service, "C") == "c"
    details = api.ok(
        "GET", f"/v1/projects/{PROJECT}/services/{service}/runtime-environment/details"
    )["runtimeEnvironment"]
    assert details["A"]["inheritedFrom"] == "high"
    assert details["A"]["overriding"][0]["inheritedFrom"] == "low"
    assert "inheritedFrom" not in details["B"]


def test_crud_and_list_hides_values(api: Api, emulator_clean: EmulatorServer) -> None:
    created = api.ok("POST", SECRETS, json=group("app config", {"TOKEN": "v1"}))
    assert created["id"] == "app-config"
    assert api.request("POST", SECRETS, json=group("app config", {})).status_code == 409
    listed = api.ok("GET", SECRETS)["secrets"]
    assert [g["id"] for g in listed] == ["app-config"]
    assert "secrets" not in listed[0]
    service = api.start(unique_name("svc"))["id"]
    assert env_in(emulator_clean, service, "TOKEN") == "v1"
    patched = api.ok(
        "PATCH", f"{SECRETS}/app-config", json={"secrets": {"variables": {"TOKEN": "v2"}}}
    )
    assert patched["secrets"]["variables"] == {"TOKEN": "v2"}
    api.wait_status(service)
    assert env_in(emulator_clean, service, "TOKEN") == "v2"  # the service was restarted
    assert api.ok("POST", f"{SECRETS}/app-config", json={"priority": 20}) == {}
    assert api.ok("GET", f"{SECRETS}/app-config")["priority"] == 20
    assert api.ok("DELETE", f"{SECRETS}/app-config") == {}
    assert api.request("GET", f"{SECRETS}/app-config").status_code == 404


def test_bad_group_bodies_are_refused_without_echoing_values(api: Api) -> None:
    response = api.request(
        "POST",
        SECRETS,
        json={
            "name": "x",
            "secretType": "files",
            "priority": 101,
            "secrets": {"variables": {"K": 5}},
        },
    )
    assert response.status_code == 400
    paths = {".".join(d["path"]) for d in response.json()["error"]["details"]}
    assert {"name", "secretType", "priority", "secrets.variables.K"} <= paths
    bad_value = api.request("POST", SECRETS, json=group("leaky", {"bad name": "do-not-echo-me"}))
    assert bad_value.status_code == 400
    assert "do-not-echo-me" not in bad_value.text
