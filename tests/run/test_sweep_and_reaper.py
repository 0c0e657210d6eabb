"""The sweep and the reaper against an emulator, over real sockets and real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_northflank.client import NorthflankClient
from pytest_northflank.client.models import DeploymentServiceSpec
from pytest_northflank.run.ledger import Ledger
from pytest_northflank.run.ownership import Ownership
from pytest_northflank.run.reaper import ReaperProcess
from pytest_northflank.run.sweep import sweep

if TYPE_CHECKING:
    from pytest_northflank.emulator import EmulatorServer

PROJECT = "default-project"


def _service_names(emulator: EmulatorServer) -> set[str]:
    with NorthflankClient(emulator.token, base_url=emulator.url) as client:
        return {service.name for service in client.list_services(PROJECT)}


def _intent(ledger: Ledger, name: str, owner: str = "m:1") -> None:
    ledger.record_intent(name=name, project_id=PROJECT, worker_id="m", owner=owner)


def owned_spec(name: str) -> DeploymentServiceSpec:
    """The spec of a service as this tool makes it in the run its name names."""
    run_id = name.split("-")[1]
    description = Ownership(run_id, "master").description(datetime.now(timezone.utc))
    return DeploymentServiceSpec(name=name, command="sleep infinity", description=description)


def _create(client: NorthflankClient, ledger: Ledger, name: str, owner: str = "m:1") -> None:
    _intent(ledger, name, owner)
    service = client.create_deployment_service(PROJECT, owned_spec(name))
    ledger.record_created(name, service.id)


def test_sweep_deletes_created_and_in_flight_services_only(
    emulator_clean: EmulatorServer, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    with NorthflankClient(emulator_clean.token, base_url=emulator_clean.url) as client:
        _create(client, ledger, "nft-aaaaaa-m-1")
        # Create sent, process died before recording the id: found by name.
        _intent(ledger, "nft-aaaaaa-m-2")
        client.create_deployment_service(PROJECT, owned_spec("nft-aaaaaa-m-2"))
        # Intent only, create never sent: nothing to delete, still marked done.
        _intent(ledger, "nft-aaaaaa-m-3")
        # Another run's service and a human's service.
        client.create_deployment_service(PROJECT, owned_spec("nft-bbbbbb-m-1"))
        client.create_deployment_service(PROJECT, DeploymentServiceSpec(name="my-database"))

        result = sweep(client, ledger, ledger.alive(), run_id="aaaaaa")

    assert sorted(result.deleted) == ["nft-aaaaaa-m-1", "nft-aaaaaa-m-2"]
    # Looked for by name and not found: done, but not a deletion.
    assert result.absent == ["nft-aaaaaa-m-3"]
    assert result.failed == {}
    assert ledger.alive() == []
    found = {entry.name: entry.extra.get("found", True) for entry in ledger.entries()}
    assert found == {"nft-aaaaaa-m-1": True, "nft-aaaaaa-m-2": True, "nft-aaaaaa-m-3": False}
    assert _service_names(emulator_clean) == {"nft-bbbbbb-m-1", "my-database"}


def test_sweep_counts_only_services_that_existed_as_deleted(
    emulator_clean: EmulatorServer, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    with NorthflankClient(emulator_clean.token, base_url=emulator_clean.url) as client:
        _create(client, ledger, "nft-ffffff-m-1")
        _create(client, ledger, "nft-ffffff-m-2")
        # Deleted from outside the run: the sweep's delete finds it gone.
        ids = {entry.name: entry.service_id for entry in ledger.entries()}
        emulator_clean.control.delete_service(PROJECT, str(ids["nft-ffffff-m-2"]))
        # Create sent and refused by the API: nothing was made, nothing to look for.
        _intent(ledger, "nft-ffffff-m-3")
        ledger.record_refused("nft-ffffff-m-3", "400 not a deployment plan")
        # Create sent, then the process died: no service by that name ever appeared.
        _intent(ledger, "nft-ffffff-m-4")

        alive = ledger.alive()
        assert [entry.name for entry in alive] == [
            "nft-ffffff-m-1",
            "nft-ffffff-m-2",
            "nft-ffffff-m-4",
        ]
        result = sweep(client, ledger, alive, run_id="ffffff")

    assert result.deleted == ["nft-ffffff-m-1"]
    assert result.absent == ["nft-ffffff-m-2", "nft-ffffff-m-4"]
    assert result.failed == {}
    assert ledger.alive() == []
    assert _service_names(emulator_clean) == set()


def test_sweep_waits_out_a_burst_of_server_errors(
    emulator_clean: EmulatorServer, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    with NorthflankClient(emulator_clean.token, base_url=emulator_clean.url) as client:
        _create(client, ledger, "nft-cccccc-m-1")
        emulator_clean.control.fail_next_deletes(count=8, status=503, message="overloaded")
        result = sweep(client, ledger, ledger.alive(), run_id="cccccc", sleep=lambda _: None)
    assert result.deleted == ["nft-cccccc-m-1"]
    assert _service_names(emulator_clean) == set()


def test_sweep_reports_what_it_could_not_delete_and_keeps_it_alive(
    emulator_clean: EmulatorServer, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    with NorthflankClient(
        emulator_clean.token, base_url=emulator_clean.url, max_retries=0
    ) as client:
        _create(client, ledger, "nft-dddddd-m-1")
        emulator_clean.control.fail_next_deletes(count=1000, status=503, message="down")
        result = sweep(client, ledger, ledger.alive(), run_id="dddddd", give_up_after=0.0)
        emulator_clean.control.clear_faults()
        assert "503" in result.failed["nft-dddddd-m-1"]
        assert [entry.name for entry in ledger.alive()] == ["nft-dddddd-m-1"]
        sweep(client, ledger, ledger.alive(), run_id="dddddd")
    assert ledger.alive() == []


def test_reaper_told_clean_touches_nothing(emulator_clean: EmulatorServer, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    with NorthflankClient(emulator_clean.token, base_url=emulator_clean.url) as client:
        reaper = ReaperProcess.start(
            ledger_path=ledger.path,
            base_url=emulator_clean.url,
            token=emulator_clean.token,
            run_id="eeeeee",
            project_id=PROJECT,
        )
        _create(client, ledger, "nft-eeeeee-m-1")
        reaper.finish_clean()
    assert _service_names(emulator_clean) == {"nft-eeeeee-m-1"}


OWNER_SCRIPT = """
import os, sys, time
from pathlib import Path
from pytest_northflank.client import NorthflankClient
from pytest_northflank.client.models import DeploymentServiceSpec
from pytest_northflank.run.ledger import Ledger
from pytest_northflank.run.reaper import ReaperProcess

url, token, ledger_path, run = sys.argv[1:5]
ledger = Ledger(Path(ledger_path))
ReaperProcess.start(ledger_path=ledger.path, base_url=url, token=token, run_id=run,
                    project_id="default-project")
with NorthflankClient(token, base_url=url) as client:
    for n in range(3):
        name = f"nft-{run}-m-{n}"
        ledger.record_intent(name=name, project_id="default-project", worker_id="m",
                             owner=f"m:{os.getpid()}")
        service = client.create_deployment_service(
            "default-project", DeploymentServiceSpec(name=name, command="sleep infinity",
                description=f"pytest-northflank run={run} worker=master"))
        ledger.record_created(name, service.id)
print("created", flush=True)
time.sleep(600)
"""


def _wait_for(predicate: object, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_reaper_deletes_the_run_after_its_owner_is_killed(
    emulator_clean: EmulatorServer, tmp_path: Path
) -> None:
    with NorthflankClient(emulator_clean.token, base_url=emulator_clean.url) as client:
        client.create_deployment_service(PROJECT, DeploymentServiceSpec(name="nft-other1-m-1"))
    ledger_path = tmp_path / "ledger.jsonl"
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            OWNER_SCRIPT,
            emulator_clean.url,
            emulator_clean.token,
            str(ledger_path),
            "kill99",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    assert owner.stdout.readline().strip() == "created"
    assert len(_service_names(emulator_clean)) == 4
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    owner.stdout.close()

    assert _wait_for(lambda: _service_names(emulator_clean) == {"nft-other1-m-1"})
    assert Ledger(ledger_path).alive() == []
    log = (tmp_path / "reaper.log").read_text()
    assert "deleted 3 service(s)" in log
    assert emulator_clean.token not in log
