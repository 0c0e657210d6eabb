"""The provisioning seam on its own (create, wait, delete), driven against a real emulator."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from pytest_northflank.client import NorthflankClient
from pytest_northflank.client.models import DeploymentServiceSpec
from pytest_northflank.config.settings import resolve
from pytest_northflank.errors import ReadyTimeout
from pytest_northflank.provisioning.provisioner import Provisioner
from pytest_northflank.run.ledger import Ledger
from pytest_northflank.run.ownership import Ownership
from pytest_northflank.run.stats import RunStats

if TYPE_CHECKING:
    from pytest_northflank.emulator import EmulatorServer


def provisioner(
    client: NorthflankClient,
    *,
    ledger: Ledger | None = None,
    progress: list[str] | None = None,
) -> Provisioner:
    settings = resolve(cli={"backend": "emulator"}, ini={}, environ={})
    return Provisioner(
        client,
        settings,
        RunStats(),
        owner=Ownership("abc123", "gw1"),
        project_id="default-project",
        ledger=ledger,
        progress=progress.append if progress is not None else None,
    )


def test_readiness_polls_back_off(emulator_clean: EmulatorServer, client: NorthflankClient) -> None:
    emulator_clean.control.set_ready(delay=3.0)
    maker = provisioner(client)
    before = client.request_count
    sandbox = maker.provision(maker.settings.sandbox_options(), hint="slow")
    requests = client.request_count - before
    # One create, then polls at about 0.1, 0.3, 0.7, 1.5, 3.1 s (and 6.1 s on a slow machine):
    # a fixed 0.1 s poll would have made about 30.
    assert 2 <= requests <= 8
    assert maker.stats.created == 1
    assert maker.stats.provisioning_seconds == [sandbox.provisioning_seconds]
    maker.release(sandbox)
    assert maker.stats.deleted == 1
    assert sandbox.deleted


def test_no_progress_line_when_ready_quickly(client: NorthflankClient) -> None:
    lines: list[str] = []
    maker = provisioner(client, progress=lines)
    maker.release(maker.provision(maker.settings.sandbox_options(), hint="quick"))
    assert lines == []


def test_timeout_cleans_up_and_counts(
    emulator_clean: EmulatorServer, client: NorthflankClient
) -> None:
    emulator_clean.control.set_ready(delay=60.0)
    maker = provisioner(client)
    options = maker.settings.sandbox_options().model_copy(update={"ready_timeout": 0.3})
    with pytest.raises(ReadyTimeout, match="The sandbox was deleted"):
        maker.provision(options, hint="never-ready")
    assert (maker.stats.created, maker.stats.deleted, maker.stats.failed) == (1, 1, 1)
    assert client.list_services("default-project") == []


def test_the_ledger_sees_each_service_before_and_after(
    client: NorthflankClient, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    maker = provisioner(client, ledger=ledger)
    sandbox = maker.provision(maker.settings.sandbox_options(), hint="ledgered")
    (entry,) = ledger.entries()
    assert (entry.name, entry.state, entry.service_id) == (sandbox.name, "created", sandbox.id)
    assert entry.worker_id == "gw1"
    maker.release(sandbox)
    assert ledger.alive() == []


def test_leftovers_are_released_at_the_end(client: NorthflankClient) -> None:
    maker = provisioner(client)
    options = maker.settings.sandbox_options()
    boxes = [maker.provision(options, hint=f"left-{n}") for n in range(2)]
    maker.release_leftovers()
    assert all(box.deleted for box in boxes)
    assert client.list_services("default-project") == []


# No deadline: the first example also builds a client, slow on a machine shared by many.
@hypothesis_settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hint=st.text(max_size=400))
def test_every_test_id_gives_a_spec_the_api_accepts(hint: str) -> None:
    settings = resolve(cli={}, ini={}, environ={})
    maker = Provisioner(
        NorthflankClient("unused", base_url="http://127.0.0.1:9"),
        settings,
        RunStats(),
        owner=Ownership("abc123", "master"),
        project_id="p",
    )
    try:
        spec = maker.spec_for(settings.sandbox_options(), hint)
    finally:
        maker.client.close()
    assert isinstance(spec, DeploymentServiceSpec)
    assert spec.name.startswith("nft-abc123-m-")
    assert len(spec.name) <= 54
    assert spec.command == "sleep infinity"
    assert spec.description is not None
    assert spec.description.startswith("pytest-northflank run=abc123 worker=master created=")
