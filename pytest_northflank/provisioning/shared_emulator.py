"""One embedded emulator for all xdist workers of a run, in a process of its own.

Without xdist the emulator runs on a thread of the pytest process. With xdist, the first worker
that needs a sandbox starts ``python -m pytest_northflank.emulator`` under a file lock in the
run directory; the emulator writes its machine-readable info file there (URL, pid, isolation,
and the token it generated, mode 0600), and the other workers use the same one, so a run-wide
shared sandbox, the request counts and the crash cleanup all see one API, as on Northflank. It
stops when the controller ends the session, or when the controller's process dies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from pytest_northflank.emulator.info_file import read_info_file
from pytest_northflank.errors import EmulatorError
from pytest_northflank.run.files import PRIVATE_FILE, RunDir, private_file
from pytest_northflank.run.reaper import pid_alive

INFO_FILE = RunDir.EMULATOR_INFO
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class SharedEmulator:
    """Where the run's emulator listens. ``token`` lives only in the emulator's 0600 info file."""

    url: str
    token: str
    pid: int
    isolation: str
    isolation_reason: str
    ca_file: str | None = None  #: the tunnel's CA certificate


def _read(run_dir: Path) -> SharedEmulator | None:
    info = read_info_file(run_dir / INFO_FILE)
    if info is None or info.token is None:
        return None
    return SharedEmulator(
        info.url, info.token, info.pid, info.isolation, info.isolation_reason, info.ca_file
    )


def find(run_dir: Path) -> SharedEmulator | None:
    """The run's emulator if one is running."""
    info = _read(run_dir)
    return info if info is not None and pid_alive(info.pid) else None


def _wait_for_info(
    run_dir: Path, log_path: Path, process: subprocess.Popen[bytes]
) -> SharedEmulator:
    """The emulator's info file, written once it listens."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        info = _read(run_dir)
        if info is not None and info.pid == process.pid:
            return info
        if process.poll() is not None:
            lines = log_path.read_text(errors="replace").splitlines()
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
    images: str | None = None,
) -> SharedEmulator:
    """The run's emulator, started by whichever process asks first."""
    RunDir(run_dir).create()
    with FileLock(str(run_dir / RunDir.EMULATOR_LOCK), mode=PRIVATE_FILE):
        running = find(run_dir)
        if running is not None:
            return running
        log_path = run_dir / RunDir.EMULATOR_LOG
        argv = [sys.executable, "-m", "pytest_northflank.emulator", "--port", "0"]
        argv += ["--isolation", isolation, "--ready-delay", str(ready_delay)]
        argv += ["--project", project_id, "--exit-with-pid", str(exit_with_pid)]
        argv += ["--info-file", str(run_dir / INFO_FILE)]
        if images is not None:  # else the emulator's default (NF_EMULATOR_IMAGES, or pull)
            argv += {"require": ["--require-images"], "off": ["--no-images"]}.get(images, [])
        # No token given: the emulator makes one and writes it to its 0600 info file only.
        env = {k: v for k, v in os.environ.items() if k != "NORTHFLANK_EMULATOR_TOKEN"}
        with os.fdopen(private_file(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Ctrl-C goes to pytest, which then stops the emulator in order.
                start_new_session=True,
            )
        info = _wait_for_info(run_dir, log_path, process)
        _PARKED.append(process)
        return info


# Handles of emulators this process started; kept so they are not collected (and warned
# about) while the emulator, which may outlive this worker, still runs.
_PARKED: list[subprocess.Popen[bytes]] = []


def _is_the_runs_emulator(pid: int, run_dir: Path) -> bool:
    """Whether process ``pid`` is the emulator started for ``run_dir`` (its command line names
    the run's info file), so a damaged or planted info file never gets another process killed."""
    if any(process.pid == pid for process in _PARKED):
        return True
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"pytest_northflank.emulator" in argv and os.fsencode(run_dir / INFO_FILE) in argv


def stop(run_dir: Path, timeout: float = 15.0) -> None:
    """Stop the run's emulator (every sandbox goes with it); called by the controller."""
    info = _read(run_dir)
    if info is None or not pid_alive(info.pid) or not _is_the_runs_emulator(info.pid, run_dir):
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
