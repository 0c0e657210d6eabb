"""Whole pytest runs on the real-backend path (an emulator in its own process is the API) that
end badly: after each, the emulator holds no service of the run, and other runs keep theirs.

Each suite writes ``started-<n>`` files into a signal directory once its sandbox is up, so the
test knows when to strike without timing guesses.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from remote_emulator import RemoteEmulator, wait_for, write_suite

SUITE_HEADER = """
import os, pathlib, time
import pytest

SIGNALS = pathlib.Path(os.environ["NF_TEST_SIGNALS"])

def announce(sandbox, what):
    SIGNALS.mkdir(exist_ok=True)
    (SIGNALS / f"{what}-{os.getpid()}").write_text(sandbox.name)
"""


def _pytest(
    emulator: RemoteEmulator, suite: Path, signals: Path, *args: str, temp_dir: Path | None = None
) -> subprocess.Popen[str]:
    env = emulator.env()
    env["NF_TEST_SIGNALS"] = str(signals)
    if temp_dir is not None:
        env["TMPDIR"] = str(temp_dir)
        env.pop("XDG_RUNTIME_DIR", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "northflank",
            "-p",
            "no:cacheprovider",
            "-q",
            str(suite),
            *args,
        ],
        cwd=suite,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _announced(signals: Path, what: str, count: int = 1) -> bool:
    return signals.exists() and len(list(signals.glob(f"{what}-*"))) >= count


def _run_id(emulator: RemoteEmulator) -> str:
    names = {name for name in emulator.service_names() if name.startswith("nft-")}
    run_ids = {name.split("-")[1] for name in names}
    assert len(run_ids) == 1, names
    return run_ids.pop()


def _finish(process: subprocess.Popen[str], timeout: float = 120) -> str:
    output, _ = process.communicate(timeout=timeout)
    return output


SLEEPING_SUITE = (
    SUITE_HEADER
    + """
def test_waits(nf_sandbox):
    announce(nf_sandbox, "started")
    time.sleep(300)
"""
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_leads_to_a_normal_teardown(
    remote_emulator: RemoteEmulator, tmp_path: Path, signum: signal.Signals
) -> None:
    signals = tmp_path / "signals"
    process = _pytest(remote_emulator, write_suite(tmp_path / "suite", SLEEPING_SUITE), signals)
    assert wait_for(lambda: _announced(signals, "started"))
    run_id = _run_id(remote_emulator)
    os.kill(process.pid, signum)
    output = _finish(process)
    assert process.returncode == 2, output  # interrupted
    assert remote_emulator.run_services(run_id) == set(), output
    assert "sandboxes: 1 created, 1 deleted" in output


def test_pytest_killed_with_sigkill_is_cleaned_up_by_the_reaper(
    remote_emulator: RemoteEmulator, tmp_path: Path
) -> None:
    signals, temp = tmp_path / "signals", tmp_path / "tmp"
    temp.mkdir()
    suite = write_suite(tmp_path / "suite", SLEEPING_SUITE)
    process = _pytest(remote_emulator, suite, signals, temp_dir=temp)
    assert wait_for(lambda: _announced(signals, "started"))
    run_id = _run_id(remote_emulator)
    run_dir = temp / f"pytest-northflank-{os.getuid()}" / f"run-{run_id}"
    assert (run_dir / "ledger.jsonl").exists()
    os.kill(process.pid, signal.SIGKILL)
    _finish(process)
    assert wait_for(lambda: remote_emulator.run_services(run_id) == set(), timeout=90)
    # Once everything is deleted the reaper removes the run's files too (ledger, its log).
    assert wait_for(lambda: not run_dir.exists())


CRASHING_WORKER_SUITE = (
    SUITE_HEADER
    + """
@pytest.mark.parametrize("n", range(4))
def test_work(nf_sandbox, n):
    announce(nf_sandbox, "started")
    assert nf_sandbox.run("true").ok
    if n == 0:
        {crash}
"""
)


@pytest.mark.parametrize(
    "crash", ["os._exit(3)", "os.kill(os.getpid(), 9)"], ids=["os-exit", "sigkill"]
)
def test_a_crashed_xdist_worker_leaves_nothing(
    remote_emulator: RemoteEmulator, tmp_path: Path, crash: str
) -> None:
    suite = write_suite(tmp_path / "suite", CRASHING_WORKER_SUITE.replace("{crash}", crash))
    process = _pytest(remote_emulator, suite, tmp_path / "signals", "-n", "2")
    output = _finish(process, timeout=240)
    assert process.returncode == 1, output
    assert "crashed" in output
    assert {name for name in remote_emulator.service_names() if name.startswith("nft-")} == set()
    # Its test's sandbox, and any it made ahead (warm-ahead) that no other worker took.
    assert re.search(r"deleted \d+ sandbox\(es\) left behind", output), output


TEARDOWN_ERROR_SUITE = (
    SUITE_HEADER
    + """
@pytest.fixture
def broken(nf_sandbox_factory):
    box = nf_sandbox_factory()
    yield box
    raise RuntimeError("teardown blew up")

def test_uses_broken(broken):
    assert broken.run("true").ok
"""
)


def test_an_exception_in_teardown_still_deletes_the_sandbox(
    remote_emulator: RemoteEmulator, tmp_path: Path
) -> None:
    suite = write_suite(tmp_path / "suite", TEARDOWN_ERROR_SUITE)
    process = _pytest(remote_emulator, suite, tmp_path / "signals")
    output = _finish(process)
    assert "teardown blew up" in output
    assert "1 passed, 1 error" in output
    assert {name for name in remote_emulator.service_names() if name.startswith("nft-")} == set()


def test_deletes_failing_with_5xx_for_a_while_are_retried(
    remote_emulator: RemoteEmulator, tmp_path: Path
) -> None:
    suite = write_suite(
        tmp_path / "suite",
        SUITE_HEADER + "\ndef test_one(nf_sandbox):\n    assert nf_sandbox.run('true').ok\n",
    )
    remote_emulator.control.fail_next_deletes(count=12, status=503, message="unavailable")
    process = _pytest(remote_emulator, suite, tmp_path / "signals")
    output = _finish(process, timeout=180)
    assert {name for name in remote_emulator.service_names() if name.startswith("nft-")} == set()
    assert "1 passed" in output


def test_two_concurrent_runs_only_clean_up_their_own(
    remote_emulator: RemoteEmulator, tmp_path: Path
) -> None:
    signals_a, signals_b = tmp_path / "signals-a", tmp_path / "signals-b"
    suite = write_suite(tmp_path / "suite", SLEEPING_SUITE)
    run_a = _pytest(remote_emulator, suite, signals_a)
    run_b = _pytest(remote_emulator, suite, signals_b)
    assert wait_for(lambda: _announced(signals_a, "started") and _announced(signals_b, "started"))
    name_a = next(signals_a.glob("started-*")).read_text()
    name_b = next(signals_b.glob("started-*")).read_text()
    run_a_id, run_b_id = name_a.split("-")[1], name_b.split("-")[1]
    assert run_a_id != run_b_id

    os.kill(run_a.pid, signal.SIGKILL)
    _finish(run_a)
    assert wait_for(lambda: remote_emulator.run_services(run_a_id) == set(), timeout=90)
    assert remote_emulator.run_services(run_b_id) == {name_b}

    os.kill(run_b.pid, signal.SIGTERM)
    _finish(run_b)
    assert remote_emulator.run_services(run_b_id) == set()


SHARED_SUITE = (
    SUITE_HEADER
    + """
import pytest

@pytest.mark.parametrize("n", range(6))
def test_shared(nf_sandbox_shared, n):
    announce(nf_sandbox_shared, "used")
    nf_sandbox_shared.run(f"echo {n} >> /tmp/visits", check=True)
    time.sleep(0.3)
    {extra}
"""
)


@pytest.mark.parametrize("backend", ["remote", "embedded"])
def test_one_shared_sandbox_for_all_workers_deleted_after_the_last(
    remote_emulator: RemoteEmulator, tmp_path: Path, backend: str
) -> None:
    signals = tmp_path / "signals"
    # The last test reads what every worker wrote: the sandbox outlived the first worker.
    extra = (
        "if n == 5:\n        time.sleep(2)\n"
        "        assert nf_sandbox_shared.read_text('/tmp/visits').split() != []"
    )
    suite = write_suite(tmp_path / "suite", SHARED_SUITE.replace("{extra}", extra))
    args = ["-n", "2", "-v"] + (["--nf-backend=emulator"] if backend == "embedded" else [])
    process = _pytest(remote_emulator, suite, signals, *args)
    output = _finish(process, timeout=240)
    assert process.returncode == 0, output
    names = {path.read_text() for path in signals.glob("used-*")}
    workers = {path.name.split("-")[1] for path in signals.glob("used-*")}
    assert len(names) == 1, names  # one sandbox...
    assert len(workers) == 2, workers  # ...used by both workers
    # Created once, deleted once (by the controller, after both workers finished).
    assert "sandboxes: 1 created, 1 deleted" in output
    assert "left behind" not in output
    assert {n for n in remote_emulator.service_names() if n.startswith("nft-")} == set()


def test_expiry_is_a_last_resort_that_reap_expired_honours(
    remote_emulator: RemoteEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = write_suite(
        tmp_path / "suite",
        SUITE_HEADER
        + "\ndef test_kept(nf_sandbox, nf_client):\n"
        + "    service = nf_client.get_service(nf_sandbox.project_id, nf_sandbox.id)\n"
        + "    assert 'deadline=' in service.description\n",
    )
    process = _pytest(
        remote_emulator, suite, tmp_path / "signals", "--nf-expiry=1", "--nf-keep=always"
    )
    output = _finish(process)
    assert "1 passed" in output, output
    kept = {name for name in remote_emulator.service_names() if name.startswith("nft-")}
    assert len(kept) == 1  # kept as asked: no cleanup path deleted it
    service = httpx.get(
        f"{remote_emulator.url}/v1/projects/default-project/services/{kept.pop()}",
        headers={"Authorization": f"Bearer {remote_emulator.token}"},
    ).json()["data"]
    assert service["expiryTime"] == 1  # createOptions.expiryTime reached the API

    from pytest_northflank.cli import main

    for name, value in remote_emulator.env().items():
        monkeypatch.setenv(name, value)
    assert wait_for(
        lambda: (
            main(["reap", "--expired", "--yes"]) == 0
            and not {name for name in remote_emulator.service_names() if name.startswith("nft-")}
        ),
        timeout=30,
    )
