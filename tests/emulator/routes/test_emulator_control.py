"""The control plane, over HTTP and from Python, and the faults it injects."""

from __future__ import annotations

import httpx
import pytest
from emulator_testing import PROJECT, Api, service_body

from pytest_northflank import __version__
from pytest_northflank.emulator import EmulatorControl, EmulatorServer
from pytest_northflank.errors import EmulatorError

SERVICES = f"/v1/projects/{PROJECT}/services"


def test_info_and_state(api: Api, emulator_clean: EmulatorServer) -> None:
    info = emulator_clean.control.info()
    assert info == {
        "version": __version__,
        "isolation": emulator_clean.isolation,
        "isolationReason": emulator_clean.isolation_reason,
        "projects": [PROJECT],
        "imageFallbacks": info["imageFallbacks"],  # which depends on this machine's network
    }
    api.ok("POST", "/v1/tags", json={"name": "t"})
    created = api.start("dumped")
    state = emulator_clean.control.state()
    (service,) = state["services"]
    assert (service["id"], service["status"], service["argv"]) == (
        created["id"], "COMPLETED", ["sleep", "infinity"]
    )  # fmt: skip
    assert service["instance"]["running"] is True
    assert state["tags"] == [{"id": "t", "name": "t"}]
    (container,) = state["containers"]
    assert container["sandboxId"] == service["instance"]["name"]
    assert state["faults"]["create"] is None


def test_reset_deletes_everything_and_restores_settings(
    api: Api, emulator_clean: EmulatorServer
) -> None:
    api.start("to be reset")
    api.ok("POST", "/v1/tags", json={"name": "t"})
    control = emulator_clean.control
    control.set_spot_only()
    control.fail_next_creates(5)
    control.set_rate_limit(100)
    control.reset()
    assert emulator_clean.runtime.containers() == []
    state = control.state()
    assert (state["services"], state["tags"]) == ([], [])
    assert state["cluster"]["spotOnly"] is False
    assert state["faults"]["create"] is None
    assert state["rateLimit"] == {**state["rateLimit"], "perHour": None, "used": 0}
    api.start("after reset")


def test_the_control_plane_over_http_needs_the_token(emulator_clean: EmulatorServer) -> None:
    url = f"{emulator_clean.url}/_emulator/reset"
    assert httpx.post(url).status_code == 401
    response = httpx.post(url, headers={"Authorization": f"Bearer {emulator_clean.token}"})
    assert response.json() == {"data": {"deletedServices": 0}}
    bad = httpx.post(
        f"{emulator_clean.url}/_emulator/faults/create",
        json={"count": "many"},
        headers={"Authorization": f"Bearer {emulator_clean.token}"},
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == "count must be int, got 'many'"


def test_control_errors_raise_emulator_error(emulator_clean: EmulatorServer) -> None:
    with pytest.raises(EmulatorError, match="400 status must be an HTTP error status"):
        emulator_clean.control.fail_next_creates(1, status=200)
    wrong = EmulatorControl(emulator_clean.url, "wrong-token")
    with pytest.raises(EmulatorError, match="401 Invalid API token") as caught:
        wrong.reset()
    assert "wrong-token" not in str(caught.value)
    assert emulator_clean.token not in repr(emulator_clean.control)


def test_next_creates_fail_with_the_chosen_status_and_message(
    api: Api, emulator_clean: EmulatorServer
) -> None:
    emulator_clean.control.fail_next_creates(2, status=502, message="Bad gateway, try again")
    for _ in range(2):
        response = api.request("POST", f"{SERVICES}/deployment", json=service_body("flaky"))
        assert response.status_code == 502
        assert response.json() == {"error": {"status": 502, "message": "Bad gateway, try again"}}
    assert api.ok("GET", SERVICES)["services"] == []
    assert api.create("flaky")["id"] == "flaky"


def test_an_ambiguous_create_failure_creates_the_service_anyway(
    api: Api, emulator_clean: EmulatorServer
) -> None:
    emulator_clean.control.fail_next_creates(1, status=504, after_create=True)
    response = api.request("POST", f"{SERVICES}/deployment", json=service_body("ghost"))
    assert response.status_code == 504
    assert [s["id"] for s in api.ok("GET", SERVICES)["services"]] == ["ghost"]
    retry = api.request("POST", f"{SERVICES}/deployment", json=service_body("ghost"))
    assert retry.status_code == 409  # a blind retry shows up as a duplicate


def test_next_deletes_fail_then_work(api: Api, emulator_clean: EmulatorServer) -> None:
    created = api.start("sticky")
    emulator_clean.control.fail_next_deletes(2)
    for _ in range(2):
        response = api.request("DELETE", f"{SERVICES}/{created['id']}")
        assert response.status_code == 503
    assert len(emulator_clean.runtime.containers()) == 1
    api.delete(created["id"])
    assert emulator_clean.runtime.containers() == []


def test_out_of_band_delete(api: Api, emulator_clean: EmulatorServer) -> None:
    created = api.start("vanishing")
    emulator_clean.control.delete_service(PROJECT, created["id"])
    assert api.request("GET", f"{SERVICES}/{created['id']}").status_code == 404
    assert emulator_clean.runtime.containers() == []
    with pytest.raises(EmulatorError, match="404"):
        emulator_clean.control.delete_service(PROJECT, created["id"])


def test_faults_can_be_cleared(api: Api, emulator_clean: EmulatorServer) -> None:
    control = emulator_clean.control
    control.fail_next_creates(3)
    control.fail_next_deletes(3)
    control.fail_next_requests(3)
    control.drop_next_exec(after_frames=0, count=2)
    control.exit_code_as_string()
    control.set_ready(delay=30, fail=True)
    faults = control.state()["faults"]
    assert faults["execDrop"] == {"remaining": 2, "afterFrames": 0}
    assert (faults["readyDelay"], faults["failReadiness"]) == (30, True)
    control.clear_faults()
    assert control.state()["faults"] == {
        "create": None, "delete": None, "requests": None, "execDrop": None,
        "exitCodeAsString": False,
        "readyDelay": 0.0, "failReadiness": False,
    }  # fmt: skip
    assert api.wait_status(api.create("cleared")["id"])["status"]["deployment"]["status"] == (
        "COMPLETED"
    )
