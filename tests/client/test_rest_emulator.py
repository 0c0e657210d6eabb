"""REST calls of the real client against the emulator over loopback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from client_helpers import PROJECT, start_service, unique_name

from pytest_northflank.client import DeploymentServiceSpec, NorthflankClient, Service
from pytest_northflank.errors import (
    ApiValidationError,
    AuthenticationError,
    ConflictError,
    DeploymentFailed,
    NotFoundError,
    RateLimitedError,
    ServerError,
)


def test_projects(nf: NorthflankClient) -> None:
    assert PROJECT in [project.id for project in nf.list_projects()]
    assert nf.get_project(PROJECT).id == PROJECT
    with pytest.raises(NotFoundError):
        nf.get_project("no-such-project")


def test_wrong_token_is_an_authentication_error(emulator: Any) -> None:
    with NorthflankClient("wrong-token", base_url=emulator.url) as other:
        with pytest.raises(AuthenticationError) as info:
            other.list_projects()
        assert "wrong-token" not in str(info.value)


def test_tags(nf: NorthflankClient) -> None:
    name = unique_name("spot")
    tag = nf.create_tag(name, use_spot_nodes=True)
    assert (tag.name, tag.use_spot_nodes) == (name, True)
    found = {t.name: t for t in nf.list_tags()}
    assert found[name].use_spot_nodes is True


def test_service_lifecycle(nf: NorthflankClient) -> None:
    spec = DeploymentServiceSpec(
        name=unique_name("c-life"), command="sleep infinity", env={"GREETING": "hi"}
    )
    created = nf.create_deployment_service(PROJECT, spec)
    assert created.name == spec.name
    assert created.deployment_status in ("PENDING", "IN_PROGRESS", "COMPLETED")
    ready = nf.wait_for_service_ready(PROJECT, created.id, timeout=60, poll_interval=0.05)
    assert ready.ready
    assert ready.image == "ubuntu:22.04"
    assert created.id in [s.id for s in nf.list_services(PROJECT)]
    containers = nf.list_containers(PROJECT, created.id)
    assert len(containers) == 1
    assert containers[0].name

    nf.pause_service(PROJECT, created.id)
    assert nf.get_service(PROJECT, created.id).paused
    nf.resume_service(PROJECT, created.id)
    resumed = nf.wait_for_service_ready(PROJECT, created.id, timeout=60, poll_interval=0.05)
    assert not resumed.paused
    nf.restart_service(PROJECT, created.id)
    nf.wait_for_service_ready(PROJECT, created.id, timeout=60, poll_interval=0.05)
    nf.scale_service(PROJECT, created.id, 1)

    assert nf.delete_service(PROJECT, created.id) is True
    assert nf.delete_service(PROJECT, created.id) is False
    with pytest.raises(NotFoundError):
        nf.get_service(PROJECT, created.id)


def test_duplicate_name_is_a_conflict(
    nf: NorthflankClient, service_factory: Callable[..., Service]
) -> None:
    existing = service_factory("c-dup")
    with pytest.raises(ConflictError):
        nf.create_deployment_service(PROJECT, DeploymentServiceSpec(name=existing.name))


def test_server_side_validation_error_carries_details(nf: NorthflankClient) -> None:
    # Bypass the client-side model to see the API's own answer.
    with pytest.raises(ApiValidationError) as info:
        nf._rest.request(
            "POST",
            f"/v1/projects/{PROJECT}/services/deployment",
            body={"name": "x", "deployment": {"instances": "one"}},
            idempotent=False,
        )
    assert info.value.status in (400, 422)
    assert info.value.details


def test_failed_deployment_raises(emulator_clean: Any, nf_clean: NorthflankClient) -> None:
    emulator_clean.control.set_ready(fail=True)
    service = nf_clean.create_deployment_service(
        PROJECT, DeploymentServiceSpec(name=unique_name("c-fail"), command="sleep infinity")
    )
    with pytest.raises(DeploymentFailed, match=f"service {service.id} deployment FAILED"):
        nf_clean.wait_for_service_ready(PROJECT, service.id, timeout=30, poll_interval=0.05)


def test_ambiguous_create_that_succeeded_is_adopted_not_duplicated(
    emulator_clean: Any, nf_clean: NorthflankClient
) -> None:
    emulator_clean.control.fail_next_creates(1, 503, "gateway hiccup", after_create=True)
    name = unique_name("c-adopt")
    service = nf_clean.create_deployment_service(PROJECT, DeploymentServiceSpec(name=name))
    # One create, one listing, one read of the adopted service: the create was not resent.
    assert nf_clean.request_count == 3
    assert service.name == name
    assert [s.name for s in nf_clean.list_services(PROJECT)] == [name]


def test_ambiguous_create_that_failed_is_sent_once_more(
    emulator_clean: Any, nf_clean: NorthflankClient
) -> None:
    emulator_clean.control.fail_next_creates(1, 500, "boom")
    name = unique_name("c-retry")
    nf_clean.create_deployment_service(PROJECT, DeploymentServiceSpec(name=name))
    # create (500), listing (absent), create again.
    assert nf_clean.request_count == 3
    assert [s.name for s in nf_clean.list_services(PROJECT)] == [name]


def test_create_failing_twice_raises_the_server_error(
    emulator_clean: Any, nf_clean: NorthflankClient
) -> None:
    emulator_clean.control.fail_next_creates(2, 500, "still broken")
    with pytest.raises(ServerError, match="still broken"):
        nf_clean.create_deployment_service(PROJECT, DeploymentServiceSpec(name=unique_name("c-x")))
    assert nf_clean.list_services(PROJECT) == []


def test_delete_retries_a_transient_failure(
    emulator_clean: Any, nf_clean: NorthflankClient
) -> None:
    service = start_service(nf_clean, "c-del")
    emulator_clean.control.fail_next_deletes(1, 503, "busy")
    nf_clean._rest.backoff_base = 0.01
    assert nf_clean.delete_service(PROJECT, service.id) is True
    with pytest.raises(NotFoundError):
        nf_clean.get_service(PROJECT, service.id)


def test_rate_limit_figures_and_429(emulator_clean: Any) -> None:
    url, token = emulator_clean.url, emulator_clean.token
    with NorthflankClient(token, base_url=url, max_rate_limit_wait=5) as own:
        emulator_clean.control.set_rate_limit(3)
        own.list_projects()
        figures = own.rate_limit
        assert figures is not None
        assert figures.limit == 3
        assert figures.remaining == 2
        assert figures.reset_after is not None
        assert figures.reset_after > 5
        own.list_projects()
        own.list_projects()
        with pytest.raises(RateLimitedError) as info:
            own.list_projects()
        assert info.value.reset_after is not None
        assert info.value.reset_after > 5
        assert own.request_count == 4  # the long reset was not waited for, nor retried


def test_out_of_band_delete_is_seen(emulator_clean: Any, nf_clean: NorthflankClient) -> None:
    service = start_service(nf_clean, "c-oob")
    emulator_clean.control.delete_service(PROJECT, service.id)
    with pytest.raises(NotFoundError):
        nf_clean.get_service(PROJECT, service.id)
    assert nf_clean.delete_service(PROJECT, service.id) is False


def test_team_scoped_client_end_to_end(emulator: Any, tmp_path: Any) -> None:
    with NorthflankClient(emulator.token, base_url=emulator.url, team_id="my-team") as team:
        assert PROJECT in [p.id for p in team.list_projects()]
        service = start_service(team, "c-team")
        try:
            assert team.run(PROJECT, service.id, "echo team").stdout == b"team\n"
            (tmp_path / "f.txt").write_text("via team routes")
            remote = f"{unique_name('team')}/f.txt"
            team.upload(PROJECT, service.id, tmp_path / "f.txt", remote)
            team.download(PROJECT, service.id, remote, tmp_path / "back.txt")
            assert (tmp_path / "back.txt").read_text() == "via team routes"
            team.fetch_logs(PROJECT, service.id)
        finally:
            assert team.delete_service(PROJECT, service.id)
