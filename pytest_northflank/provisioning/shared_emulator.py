"""One embedded emulator for all xdist workers of a run, in a process of its own.

Without xdist the emulator runs on a thread of the pytest process. With xdist, the first worker
that needs a sandbox starts ``python -m pytest_northflank.emulator`` under a file lock in the
run directory and writes where it listens; the other workers use the same one, so a run-wide
shared sandbox, the request counts and the crash cleanup all see one API, as on Northflank. It
stops when the controller ends the session, or when the controller's process dies.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from pytest_northflank.errors import EmulatorError
from pytest_northflank.run.files import RunDir, replace_json
from pytest_northflank.run.reaper import pid_alive

INFO_FILE = RunDir.EMULATOR_INFO
TOKEN_ENV = "NORTHFLANK_EMULATOR_TOKEN"
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class SharedEmulator:
    """Where the run's emulator listens. ``token`` is only ever written to a 0600 file."""

    url: str
    token: str
    pid: int
    isolation: str
    isolation_reason: str


def _read(run_dir: Path) -> SharedEmulator | None:
    try:
        return SharedEmulator(**json.loads((run_dir / INFO_FILE).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def find(run_dir: Path) -> SharedEmulator | None:
    """The run's emulator if one is running."""
    info = _read(run_dir)
    return info if info is not None and pid_alive(info.pid) else None


def _wait_for_banner(log_path: Path, process: subprocess.Popen[bytes]) -> tuple[str, str, str]:
    """The URL and isolation the emulator prints when it is ready."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        lines = log_path.read_text(errors="replace").splitlines()
        url = next((line.rsplit(" ", 1)[-1] for line in lines if " listening on " in line), None)
        isolation = next((line for line in lines if line.startswith("isolation: ")), None)
        if url and isolation:
            mode, _, reason = isolation.removeprefix("isolation: ").partition(" ")
            return url, mode, reason.strip("()")
        if process.poll() is not None:
            raise EmulatorError(
                f"the run's emulator exited with {process.returncode} at start; its output "
                f"({log_path}):\n" + "\n".join(lines[-20:])
            )
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise EmulatorError(f"the run's emulator did not start within {START_TIMEOUT:.0f} s")


def find_or_start(
    run_dir: Path,
    *,
    exit_with_pid: int,
    isolation: str,
    ready_delay: float,
    project_id: str,
) -> SharedEmulator:
    """The run's emulator, started by whichever process asks first."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(run_dir / RunDir.EMULATOR_LOCK)):
        running = find(run_dir)
        if running is not None:
            return running
        token = f"nf-emulator-{secrets.token_urlsafe(24)}"
        log_path = run_dir / RunDir.EMULATOR_LOG
        argv = [sys.executable, "-m", "pytest_northflank.emulator", "--port", "0"]
        argv += ["--isolation", isolation, "--ready-delay", str(ready_delay)]
        argv += ["--project", project_id, "--exit-with-pid", str(exit_with_pid)]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, TOKEN_ENV: token},
                # Ctrl-C goes to pytest, which then stops the emulator in order.
                start_new_session=True,
            )
        url, mode, reason = _wait_for_banner(log_path, process)
        info = SharedEmulator(url, token, process.pid, mode, reason)
        replace_json(run_dir / INFO_FILE, asdict(info), mode=0o600)
        _PARKED.append(process)
        return info


# Handles of emulators this process started; kept so they are not collected (and warned
# about) while the emulator, which may outlive this worker, still runs.
_PARKED: list[subprocess.Popen[bytes]] = []


def stop(run_dir: Path, timeout: float = 15.0) -> None:
    """Stop the run's emulator (every sandbox goes with it); called by the controller."""
    info = _read(run_dir)
    if info is None or not pid_alive(info.pid):
        return
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(info.pid) and time.monotonic() < deadline:
        for process in _PARKED:
            process.poll()  # reap it if it is our child
        time.sleep(0.05)
    if pid_alive(info.pid):
        os.kill(info.pid, signal.SIGKILL)
    (run_dir / INFO_FILE).unlink(missing_ok=True)
