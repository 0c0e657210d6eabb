"""Faults injected through the emulator's control plane while a real pytest run uses it as the
remote Northflank API. Each case checks the outcome a user should see (retried and passing, a
clear error, an error of the test's setup rather than a failure) and that nothing is left."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest
from reliability_helpers import PROJECT, error_text, output, run_pytest, services_left

from pytest_northflank.client import NorthflankClient
from pytest_northflank.errors import RateLimitedError, ServerError

if TYPE_CHECKING:
    from pytest_northflank.emulator import EmulatorServer

# The inner tests reach the same emulator's control plane through the run's own settings.
CONTROL = """
import os
import pytest
from pytest_northflank import CommandFailed, ExecError, FileTransferError, NorthflankError
from pytest_northflank.emulator import EmulatorControl

CONTROL = EmulatorControl(
    os.environ["NORTHFLANK_API_BASE_URL"], os.environ["NORTHFLANK_API_TOKEN"]
)
PROJECT = "default-project"
"""

# Sandboxes made by nf_sandbox_factory inside a test are created when the test asks (never
# ahead of it), so a fault injected just before lands on them.
WORK = (
    CONTROL
    + """
def work(box, tmp_path):
    assert box.run("echo hi").stdout == "hi\\n"
    box.write_text("data/in.txt", "payload")
    box.download("data", tmp_path / "out")
    assert (tmp_path / "out" / "in.txt").read_text() == "payload"

def test_one(nf_sandbox_factory, tmp_path):
    work(nf_sandbox_factory(), tmp_path)

def test_two(nf_sandbox_factory, tmp_path):
    work(nf_sandbox_factory(), tmp_path)

def test_three(nf_sandbox, tmp_path):
    work(nf_sandbox, tmp_path)
"""
)


def summary_counts(result: pytest.RunResult) -> str:
    return next(line for line in result.stdout.lines if line.startswith("sandboxes: "))


# ------------------------------------------------------------------------ 429 and 5xx


def test_a_429_storm_is_waited_out(pytester: pytest.Pytester, remote: EmulatorServer) -> None:
    # Three requests a second: every sandbox's create, polls and delete run into the limit.
    remote.control.set_rate_limit(3, window_seconds=1)
    pytester.makepyfile(test_storm=WORK)
    result = run_pytest(pytester)
    result.assert_outcomes(passed=3)
    assert summary_counts(result) == "sandboxes: 3 created, 3 deleted, 0 kept"
    assert remote.control.state()["rateLimit"]["refused"] > 0  # the storm did happen
    assert services_left(remote) == []


def test_a_burst_of_429_with_quota_left_is_retried(
    pytester: pytest.Pytester, remote: EmulatorServer
) -> None:
    remote.control.fail_next_requests(4, 429, "Too many requests, slow down")
    pytester.makepyfile(test_burst=WORK)
    result = run_pytest(pytester)
    result.assert_outcomes(passed=3)
    assert remote.control.state()["faults"]["requests"] is None  # all four were consumed
    assert services_left(remote) == []


def test_5xx_bursts_are_retried_and_creates_are_never_duplicated(
    pytester: pytest.Pytester, remote: EmulatorServer
) -> None:
    pytester.makepyfile(
        test_bursts=CONTROL
        + """
def test_requests(nf_sandbox_factory):
    CONTROL.fail_next_requests(3, 503, "upstream connect error")
    assert nf_sandbox_factory().run("true").ok

def test_create_failed(nf_sandbox_factory):
    CONTROL.fail_next_creates(1, 502, "Bad gateway")
    assert nf_sandbox_factory().run("true").ok

def test_create_worked_but_answered_500(nf_sandbox_factory):
    # The API made the service and then failed to say so: it is adopted, not made twice.
    CONTROL.fail_next_creates(1, 500, "Internal error", after_create=True)
    assert nf_sandbox_factory().run("true").ok

def test_deletes(nf_sandbox_factory):
    box = nf_sandbox_factory()
    CONTROL.fail_next_deletes(2, 503, "Service unavailable")
    box.delete()
    assert box.deleted
"""
    )
    result = run_pytest(pytester)
    result.assert_outcomes(passed=4)
    assert summary_counts(result) == "sandboxes: 4 created, 4 deleted, 0 kept"
    assert services_left(remote) == []


def test_a_5xx_outage_is_a_clear_error_and_leaves_nothing(
    pytester: pytest.Pytester, remote: EmulatorServer
) -> None:
    pytester.makepyfile(
        test_outage=CONTROL
        + """
def test_outage(nf_sandbox_factory):
    CONTROL.fail_next_creates(2, 503, "Service unavailable: the cluster is down")
    nf_sandbox_factory()

def test_after(nf_sandbox):
    assert nf_sandbox.run("true").ok
"""
    )
    result = run_pytest(pytester)
    result.assert_outcomes(passed=1, failed=1)
    assert "ProvisioningError: creating sandbox nft-" in error_text(result)
    assert (
        "failed: 503 Service unavailable: the cluster is down (POST /v1/projects/"
        f"{PROJECT}/services/deployment)" in error_text(result)
    )
    assert services_left(remote) == []


def test_a_spent_hourly_quota_is_named_with_its_reset(
    emulator_clean: EmulatorServer,
) -> None:
    emulator_clean.control.set_rate_limit(2)
    with NorthflankClient(emulator_clean.token, base_url=emulator_clean.url) as client:
        client.list_projects()
        client.list_projects()
        with pytest.raises(RateLimitedError) as caught:
            client.list_projects()
    assert caught.value.status == 429
    assert caught.value.reset_after is not None
    assert caught.value.reset_after > 120
    assert "Rate limit exceeded: 2 requests per hour; the quota resets in" in str(caught.value)


def test_a_server_error_reaches_the_client_as_server_error(
    emulator_clean: EmulatorServer,
) -> None:
    emulator_clean.control.fail_next_requests(20, 500, "Internal error (injected)")
    with (
        NorthflankClient(emulator_clean.token, base_url=emulator_clean.url, max_retries=1) as nf,
        pytest.raises(ServerError, match=r"^500 Internal error \(injected\) \(GET /v1/projects\)"),
    ):
        nf.list_projects()


# ---------------------------------------------------------------------------- exec


def test_an_exec_connection_dropped_mid_stream(
    pytester: pytest.Pytester, remote: EmulatorServer
) -> None:
    pytester.makepyfile(
        test_drop=CONTROL
        + """
SLOW = "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.05; done; sleep 31"

def test_dropped_and_caught(nf_sandbox):
    CONTROL.drop_next_exec(after_frames=2)
    with pytest.raises(ExecError) as caught:
        nf_sandbox.run(SLOW)
    assert "the connection broke (code 1011" in str(caught.value)
    # The dropped command is really stopped, and the sandbox still works.
    left = nf_sandbox.run(["ps", "-eo", "args"], check=True).stdout.splitlines()
    assert "sleep 31" not in left
    assert nf_sandbox.run("echo still fine").stdout == "still fine\\n"

def test_dropped_during_a_download(nf_sandbox, tmp_path):
    nf_sandbox.run("head -c 3000000 /dev/urandom > big.bin", check=True)
    CONTROL.drop_next_exec(after_frames=3)
    with pytest.raises(NorthflankError, match="connection broke"):
        nf_sandbox.download("big.bin", tmp_path / "big.bin")

def test_dropped_and_reported(nf_sandbox):
    CONTROL.drop_next_exec(after_frames=1)
    nf_sandbox.run(SLOW)
"""
    )
    result = run_pytest(pytester)
    result.assert_outcomes(passed=2, failed=1)
    text = error_text(result)
    assert (
        "ExecError: exec of sh -c 'for i in 1 2 3 4 5 6; do echo line $i; sleep 0.05; done; "
        "sleep 31': the connection broke (code 1011 connection dropped (emulator fault "
        "injection)) before the command reported completion; its exit status is unknown"
    ) in text
    # The failure section lists the command with what happened to it.
    assert "northflank sandbox" in result.stdout.str()
    assert "[error: exec of sh -c 'for i in" in result.stdout.str()
    assert services_left(remote) == []


def test_exit_codes_sent_as_strings(pytester: pytest.Pytester, remote: EmulatorServer) -> None:
    remote.control.exit_code_as_string(True)
    pytester.makepyfile(
        test_strings=CONTROL
        + """
def test_exit_codes(nf_sandbox, tmp_path):
    assert nf_sandbox.run("exit 3").exit_code == 3
    assert nf_sandbox.run("true").exit_code == 0
    with pytest.raises(CommandFailed, match="exited with 42"):
        nf_sandbox.run("exit 42", check=True)
    assert nf_sandbox.exists("/etc") and not nf_sandbox.exists("/nope")
    nf_sandbox.write_text("a/b.txt", "text")
    nf_sandbox.download("a", tmp_path / "a")
    assert (tmp_path / "a" / "b.txt").read_text() == "text"
    with pytest.raises(FileTransferError, match="does not exist"):
        nf_sandbox.download("missing", tmp_path / "m")
"""
    )
    run_pytest(pytester).assert_outcomes(passed=1)
    assert services_left(remote) == []


# ------------------------------------------------------------------------ lifecycle


def test_a_service_deleted_from_outside_during_a_test(
    pytester: pytest.Pytester, remote: EmulatorServer
) -> None:
    pytester.makepyfile(
        test_gone=CONTROL
        + """
def test_deleted_then_used(nf_sandbox):
    CONTROL.delete_service(PROJECT, nf_sandbox.id)
    nf_sandbox.run("echo hi")

def test_deleted_and_left_alone(nf_sandbox):
    CONTROL.delete_service(PROJECT, nf_sandbox.id)

def test_afterwards(nf_sandbox):
    assert nf_sandbox.run("echo ok").stdout == "ok\\n"
"""
    )
    result = run_pytest(pytester)
    # A clear failure for the test that used it; teardown takes "already gone" in its stride.
    result.assert_outcomes(passed=2, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    text = error_text(result)
    # Named as gone (checked with the API), with the API's own words kept.
    assert "SandboxDeleted: sandbox nft-" in text
    assert "no longer exists: it was deleted before" in text
    assert "the API said: exec of sh -c 'echo hi': the server reported an error: Service" in text
    assert "not found in project 'default-project'" in text
    assert "INTERNALERROR" not in output(result)
    assert "error" not in result.parseoutcomes()
    assert services_left(remote) == []


def test_a_failed_deployment_is_a_setup_error_with_its_reason(
    pytester: pytest.Pytester, remote: EmulatorServer
) -> None:
    remote.control.set_ready(delay=0.2, fail=True)
    pytester.makepyfile(test_failed="def test_box(nf_sandbox):\n    pass\n")
    result = run_pytest(pytester)
    result.assert_outcomes(errors=1)
    text = error_text(result)
    assert "DeploymentFailed: sandbox nft-" in text
    assert (
        "did not become ready: its deployment FAILED; last status FAILED, reason DEPLOYING: "
        "Readiness check failed (failing readiness injected by the emulator's control plane)."
    ) in text
    assert "The sandbox was deleted." in text
    assert "1 never became ready" in result.stdout.str()
    assert services_left(remote) == []


def test_readiness_slower_than_the_timeout(
    pytester: pytest.Pytester, remote: EmulatorServer
) -> None:
    remote.control.set_ready(delay=120)
    pytester.makepyfile(
        test_slow="""
import pytest

@pytest.mark.nf_sandbox(ready_timeout=1)
def test_box(nf_sandbox):
    pass
"""
    )
    result = run_pytest(pytester)
    result.assert_outcomes(errors=1)
    text = error_text(result)
    assert "ReadyTimeout: sandbox nft-" in text
    assert "did not become ready: it was not ready within 1 s; last status " in text
    assert "A slow cluster needs a longer wait: --nf-ready-timeout" in text
    assert "The sandbox was deleted." in text
    assert services_left(remote) == []


def test_a_service_deleted_from_outside_while_it_starts(
    pytester: pytest.Pytester, remote: EmulatorServer
) -> None:
    remote.control.set_ready(delay=120)
    stop = threading.Event()
    deleted: list[str] = []

    def delete_whatever_appears() -> None:
        while not stop.is_set() and not deleted:
            for service in remote.control.state()["services"]:
                remote.control.delete_service(PROJECT, service["id"])
                deleted.append(service["id"])
            stop.wait(0.05)

    pytester.makepyfile(test_starting="def test_box(nf_sandbox):\n    pass\n")
    deleter = threading.Thread(target=delete_whatever_appears)
    deleter.start()
    try:
        result = run_pytest(pytester)
    finally:
        stop.set()
        deleter.join()
    result.assert_outcomes(errors=1)
    text = error_text(result)
    assert f"ProvisioningError: while waiting for sandbox {deleted[0]}: " in text
    assert "not found" in text
    assert "The sandbox was already gone (deleted from outside this run)." in text
    assert "INTERNALERROR" not in output(result)
    assert services_left(remote) == []
