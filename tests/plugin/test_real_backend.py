"""The plugin on the ``northflank`` backend: an emulator in this process plays the remote API
(reached over HTTP and WebSockets like api.northflank.com), so the real-account failures of
``northflank-api.md`` section 10 can be produced on demand and their messages checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from pytest_northflank.client import NorthflankClient

if TYPE_CHECKING:
    from pytest_northflank.emulator import EmulatorServer

PROJECT = "default-project"

BASIC = """
def test_box(nf_sandbox):
    assert nf_sandbox.run("echo hi").stdout == "hi\\n"
"""


@pytest.fixture
def api(emulator_clean: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    """The emulator as the remote API: token, URL and project in the environment."""
    for variable in ("NF_API_TOKEN", "NORTHFLANK_TEAM_ID", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("NORTHFLANK_API_TOKEN", emulator_clean.token)
    monkeypatch.setenv("NORTHFLANK_API_BASE_URL", emulator_clean.url)
    monkeypatch.setenv("NORTHFLANK_PROJECT_ID", PROJECT)
    return emulator_clean


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def services(api: EmulatorServer, project: str = PROJECT) -> list[str]:
    with NorthflankClient(api.token, base_url=api.url) as client:
        return [service.name for service in client.list_services(project)]


def output(result: pytest.RunResult) -> str:
    return result.stdout.str() + result.stderr.str()


def error_text(result: pytest.RunResult) -> str:
    """The exception message lines pytest printed (``E   ...``), joined without the prefix."""
    return "\n".join(line[1:].strip() for line in result.stdout.lines if line.startswith("E "))


def assert_says(result: pytest.RunResult, *fragments: str) -> None:
    text = error_text(result)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"


def assert_stopped_saying(result: pytest.RunResult, *fragments: str) -> None:
    """The run stopped before any test with a message holding ``fragments``."""
    text = output(result)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"


def test_sandboxes_on_the_remote_api(pytester: pytest.Pytester, api: EmulatorServer) -> None:
    api.control.set_rate_limit(1000)
    pytester.makepyfile(
        test_remote="""
        def test_box(nf_sandbox, nf_client):
            assert nf_sandbox.run("echo hi").stdout == "hi\\n"
            assert nf_client.base_url.startswith("http://127.0.0.1")
            # Not Northflank's own API, so no dashboard: the service's address in this API.
            assert nf_sandbox.dashboard_url == (
                nf_client.base_url + "/v1/projects/default-project/services/" + nf_sandbox.id
            )
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            f"northflank: backend=northflank (NORTHFLANK_API_TOKEN is set) api={api.url} "
            f"project={PROJECT} team=- image=ubuntu:22.04 *",
            "sandboxes: 1 created, 1 deleted, 0 kept",
            "API requests: *; rate limit: * of 1000 remaining this hour (resets in * s)",
        ]
    )
    assert api.token not in output(result)
    assert "embedded emulator" not in output(result)
    assert services(api) == []


def test_team_routes_and_dashboard(pytester: pytest.Pytester, api: EmulatorServer) -> None:
    pytester.makepyfile(
        test_team="""
        def test_box(nf_sandbox):
            url = nf_sandbox.dashboard_url
            assert "/v1/teams/my-team/projects/default-project/services/" in url
        """
    )
    run(pytester, "--nf-team=my-team").assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("team", "expected"),
    [
        (None, "https://app.northflank.com/t/personal/project/p/services/s"),
        ("my-team", "https://app.northflank.com/t/my-team/project/p/services/s"),
    ],
)
def test_the_dashboard_link_against_northflanks_api(team: str | None, expected: str) -> None:
    from pytest_northflank.config.endpoints import dashboard_url
    from pytest_northflank.config.settings import Settings

    settings = Settings(team=team)
    assert dashboard_url(settings, "https://api.northflank.com", "p", "s") == expected


def test_spot_only_cluster_without_a_spot_tag(
    pytester: pytest.Pytester, api: EmulatorServer
) -> None:
    api.control.set_spot_only(True)
    with NorthflankClient(api.token, base_url=api.url) as client:
        client.create_tag("spot-workload", use_spot_nodes=True)
        client.create_tag("plain-tag")
    pytester.makepyfile(test_spot=BASIC)
    refused = run(pytester)
    refused.assert_outcomes(errors=1)
    assert_says(
        refused,
        "ProvisioningError: Northflank refused to create sandbox nft-",
        '-test-box: "Workload is not tagged as spot, but cluster has only spot nodes configured".\n'
        "The project's cluster has only spot nodes, so every service needs a tag whose "
        "useSpotNodes is on.\n"
        "Tags with useSpotNodes: spot-workload.\n"
        "Use one: --nf-tag spot-workload (ini: nf_tags = spot-workload; marker: "
        "@pytest.mark.nf_sandbox(tags=['spot-workload'])).",
    )
    assert "plain-tag" not in error_text(refused)
    assert services(api) == []
    run(pytester, "--nf-tag=spot-workload").assert_outcomes(passed=1)


def test_spot_only_cluster_with_no_spot_tag_at_all(
    pytester: pytest.Pytester, api: EmulatorServer
) -> None:
    api.control.set_spot_only(True)
    pytester.makepyfile(test_spot=BASIC)
    result = run(pytester)
    result.assert_outcomes(errors=1)
    assert_says(
        result,
        "No tag of this account has useSpotNodes: create one in the dashboard with 'Use spot "
        "nodes' on, then pass it with --nf-tag NAME (ini: nf_tags = NAME).",
    )


def test_a_tag_that_does_not_exist(pytester: pytest.Pytester, api: EmulatorServer) -> None:
    with NorthflankClient(api.token, base_url=api.url) as client:
        client.create_tag("spot-workload", use_spot_nodes=True)
    pytester.makepyfile(test_tag=BASIC)
    result = run(pytester, "--nf-tag=spot-wrkload")
    result.assert_outcomes(errors=1)
    assert_says(
        result,
        "ProvisioningError: Northflank refused to create sandbox nft-",
        "spot-wrkload",
        "Services may only carry tags that exist (this one had: spot-wrkload).\n"
        "Tags of this account: spot-workload (useSpotNodes).\n"
        "Fix --nf-tag / nf_tags or the marker's tags=, or create the tag in the dashboard.",
    )


def test_permission_denied_names_the_permission(
    pytester: pytest.Pytester, api: EmulatorServer
) -> None:
    api.control.fail_next_creates(1, 403, "Insufficient permissions")
    pytester.makepyfile(test_denied=BASIC)
    result = run(pytester)
    result.assert_outcomes(errors=1)
    assert_says(
        result,
        "ProvisioningError: the API token may not do this (creating sandbox nft-",
        " in project default-project): 403 Insufficient permissions",
        "Its API role needs the permission Project > Services > General > Create: add it to "
        "the token's API role (or template) in the dashboard, or use a token that has it.",
    )


def test_unknown_project_lists_the_projects_the_token_sees(
    pytester: pytest.Pytester, api: EmulatorServer
) -> None:
    pytester.makepyfile(test_project=BASIC)
    result = run(pytester, "--nf-project=no-such-project")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # the preflight check stops the run
    assert_stopped_saying(
        result,
        "pytest-northflank: project 'no-such-project' (from option --nf-project) was not found: ",
        "Projects this token can see: default-project.\n"
        "Set the project with --nf-project, the ini key nf_project or NORTHFLANK_PROJECT_ID.",
    )


def test_a_wrong_token_is_named_but_never_shown(
    pytester: pytest.Pytester, api: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "nf-wrong-token-0123456789abcdef"
    monkeypatch.setenv("NORTHFLANK_API_TOKEN", wrong)
    pytester.makepyfile(test_token=BASIC)
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # the preflight check stops the run
    assert_stopped_saying(
        result,
        "the API rejected the token from NORTHFLANK_API_TOKEN (listing the services of ",
        "): 401 ",
        "Check that it is valid and not expired.",
    )
    assert wrong not in output(result)
    assert api.token not in output(result)


def test_a_failed_deployment_shows_status_reason_and_logs(
    pytester: pytest.Pytester, api: EmulatorServer
) -> None:
    api.control.set_ready(delay=0.5, fail=True)
    pytester.makepyfile(
        test_failed="""
        import pytest

        @pytest.mark.nf_sandbox(command="sh -c 'echo starting up; echo bad config >&2; sleep 600'")
        def test_box(nf_sandbox):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=1)
    assert_says(
        result,
        "DeploymentFailed: sandbox nft-",
        "-test-box (service nft-",
        " in project default-project) did not become ready: its deployment FAILED; last "
        "status FAILED, reason ",
        "Last log lines:\nstarting up\nbad config\nThe sandbox was deleted.",
    )
    assert "1 never became ready" in result.stdout.str()
    assert services(api) == []


def test_keep_on_failure_says_how_to_reach_and_delete(
    pytester: pytest.Pytester, api: EmulatorServer
) -> None:
    pytester.makepyfile(
        test_keep="""
        def test_fails(nf_sandbox):
            assert nf_sandbox.run("false").ok

        def test_passes(nf_sandbox):
            pass
        """
    )
    result = run(pytester, "--nf-keep=on-failure")
    result.assert_outcomes(passed=1, failed=1)
    kept = services(api)
    assert len(kept) == 1
    name = kept[0]
    assert re.fullmatch(r"nft-[a-z0-9]{6}-m-\d+-test-fails", name)
    run_id = name.split("-")[1]
    result.stdout.fnmatch_lines(
        [
            "sandboxes: 2 created, 1 deleted, 1 kept",
            f"kept 1 sandbox (run {run_id}):",
            f"  {name} (project {PROJECT}; failed: test_keep.py::test_fails)",
            # A standalone emulator is no dashboard: the service's API address instead.
            f"    api:    {api.url}/v1/projects/{PROJECT}/services/{name}",
            f"    shell:  pytest-northflank shell {name} --project {PROJECT} --api-url {api.url}",
            f"    exec:   pytest-northflank exec {name} --project {PROJECT} --api-url {api.url}"
            " -- CMD...",
            f"  delete them: pytest-northflank reap --run {run_id} --yes --project {PROJECT} "
            f"--api-url {api.url}",
        ]
    )
    assert "app.northflank.com" not in result.stdout.str()  # nor in the failure section
    # The kept sandbox is alive and usable after pytest has exited.
    with NorthflankClient(api.token, base_url=api.url) as client:
        assert client.run(PROJECT, name, "echo still here").stdout == b"still here\n"
    # And the printed command deletes it.
    reap = subprocess.run(
        [sys.executable, "-m", "pytest_northflank.cli", "reap", "--run", run_id, "--yes"],
        env=os.environ | {"NORTHFLANK_API_BASE_URL": api.url},
        capture_output=True,
        text=True,
        check=False,
    )
    assert reap.returncode == 0, reap.stdout + reap.stderr
    assert services(api) == []


def test_a_delete_that_fails_is_reported(pytester: pytest.Pytester, api: EmulatorServer) -> None:
    api.control.fail_next_deletes(1, 403, "Insufficient permissions")
    pytester.makepyfile(test_delete=BASIC)
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    assert_says(
        result,
        "ProvisioningError: could not delete sandbox nft-",
        " in project default-project): the API token may not do this (deleting service nft-",
        "): 403 Insufficient permissions",
        "Its API role needs the permission Project > Services > General > Delete",
        f"Delete it by hand: {api.url}/v1/projects/default-project/services/nft-",
    )
