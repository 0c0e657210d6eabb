"""``pytest-northflank list`` and ``reap`` against an emulator: only this tool's services."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest

from pytest_northflank.cli import main
from pytest_northflank.client import NorthflankClient
from pytest_northflank.client.models import DeploymentServiceSpec
from pytest_northflank.run.ownership import Ownership

if TYPE_CHECKING:
    from pytest_northflank.emulator import EmulatorServer

PROJECT = "default-project"


@pytest.fixture
def services(emulator_clean: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    """Two runs of ours (one past its deadline) and a service somebody else made."""
    now = datetime.now(timezone.utc)  # not at import: xdist may run this minutes later
    monkeypatch.setenv("NORTHFLANK_API_TOKEN", emulator_clean.token)
    monkeypatch.setenv("NORTHFLANK_API_BASE_URL", emulator_clean.url)
    monkeypatch.setenv("NORTHFLANK_PROJECT_ID", PROJECT)
    expired = Ownership("old111", "gw0", deadline=now - timedelta(hours=1))
    current = Ownership("new222", "master", deadline=now + timedelta(hours=1))
    with NorthflankClient(emulator_clean.token, base_url=emulator_clean.url) as client:
        for owner in (expired, current):
            client.create_deployment_service(
                PROJECT,
                DeploymentServiceSpec(
                    name=owner.service_name(1, "test"),
                    description=owner.description(now - timedelta(hours=2)),
                ),
            )
        client.create_deployment_service(
            PROJECT, DeploymentServiceSpec(name="nft-old111-m-9", description="hand made")
        )
    return emulator_clean


def _names(emulator: EmulatorServer) -> set[str]:
    with NorthflankClient(emulator.token, base_url=emulator.url) as client:
        return {service.name for service in client.list_services(PROJECT)}


def test_list_shows_run_worker_and_age_of_our_services_only(
    services: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    header = ["SERVICE", "RUN", "WORKER", "AGE", "DEADLINE", "KEPT", "TEST"]
    assert out.splitlines()[0].split() == header
    assert "nft-old111-w0-1-test  old111  gw0" in out
    assert "nft-new222-m-1-test" in out
    assert "2h00m" in out
    assert "nft-old111-m-9" not in out  # not described as ours


def test_reap_is_a_dry_run_unless_confirmed(
    services: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reap", "--run", "old111"]) == 0
    assert "dry run: 1 service(s) would be deleted; add --yes" in capsys.readouterr().out
    assert len(_names(services)) == 3
    assert main(["reap", "--run", "old111", "--yes"]) == 0
    assert _names(services) == {"nft-new222-m-1-test", "nft-old111-m-9"}


def test_reap_expired_deletes_only_services_past_their_deadline(services: EmulatorServer) -> None:
    assert main(["reap", "--expired", "--yes"]) == 0
    assert _names(services) == {"nft-new222-m-1-test", "nft-old111-m-9"}


def test_reap_needs_a_selection_and_list_needs_a_project(
    services: EmulatorServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["reap"])
    assert exited.value.code == 2
    assert "reap needs --run RUN_ID, --expired, --stale or --all" in capsys.readouterr().err
    monkeypatch.delenv("NORTHFLANK_PROJECT_ID")
    with pytest.raises(SystemExit):
        main(["list"])
    assert "pass --project or set NORTHFLANK_PROJECT_ID" in capsys.readouterr().err


def test_no_token_is_a_usage_error_that_never_asks_for_a_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NORTHFLANK_API_TOKEN", raising=False)
    monkeypatch.delenv("NF_API_TOKEN", raising=False)
    with pytest.raises(SystemExit):
        main(["list", "--project", "p"])
    assert "set NORTHFLANK_API_TOKEN" in capsys.readouterr().err


def test_the_console_script_serves_the_emulator() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from pytest_northflank.cli import main; main()",
            "emulator",
            "--port",
            "0",
            "--token",
            "t0ken",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert "Northflank emulator listening on http://127.0.0.1:" in process.stdout.readline()
    process.terminate()
    assert process.wait(30) == 0
    process.stdout.close()


def test_the_emulator_subcommand_names_itself_in_help_and_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["emulator", "--port", "not-a-port"])
    assert capsys.readouterr().err.startswith("usage: pytest-northflank emulator ")


def test_a_spot_only_emulator_has_the_spot_tag_the_readme_uses() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest_northflank.emulator", "--spot-only", "--token", "t0ken"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip().rpartition(" ")[2]
    try:
        with NorthflankClient("t0ken", base_url=url) as client:
            tags = client.list_tags()
            assert [(tag.name, tag.use_spot_nodes) for tag in tags] == [("spot-workload", True)]
            spec = DeploymentServiceSpec(name="on-spot", tags=["spot-workload"])
            assert client.create_deployment_service("default-project", spec).id == "on-spot"
    finally:
        process.terminate()
        assert process.wait(30) == 0
        process.stdout.close()
