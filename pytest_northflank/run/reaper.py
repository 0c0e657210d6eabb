"""The reaper: a separate process that deletes a run's services if pytest dies without cleaning up.

pytest starts it once per run (real backend only) with a pipe on its stdin, the way
testcontainers' Ryuk watches its client, but with no container. pytest writes ``clean`` and closes
the pipe after its own session-end sweep; any other end of the pipe (SIGKILL, OOM kill, a crash)
reaches the reaper as end-of-file without ``clean``, and it then deletes every service of the run
the ledger still lists, retrying through API errors, and exits. Like every cleanup path it
deletes only what a fresh read shows is this run's (see :mod:`.sweep`); when the ledger is
missing, unreadable or damaged it also lists the project and picks this run's services by
name and ownership description.

The API token travels in the environment (``NORTHFLANK_API_TOKEN``), never on the command line,
and the reaper gets only the few variables it needs. Its log is best effort: a full disk or a
removed run directory never stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from pytest_northflank.client import NorthflankClient
from pytest_northflank.errors import NorthflankError
from pytest_northflank.run.files import RunDir, private_file, take_damage_notes
from pytest_northflank.run.ledger import Ledger, LedgerEntry
from pytest_northflank.run.ownership import verified_owner
from pytest_northflank.run.sweep import sweep

CLEAN = b"clean"
_ABANDONED: list[subprocess.Popen[bytes]] = []
TOKEN_ENV = "NORTHFLANK_API_TOKEN"
# What the reaper keeps of pytest's environment: enough to start Python and reach the API.
PASSED_ENV = (
    "PATH",
    "PYTHONPATH",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
)
# How long the reaper keeps trying, all attempts together.
GIVE_UP_AFTER = 300.0


def say(message: str) -> None:
    """One line to the reaper's log; best effort (a full disk or a removed run directory must
    not stop the cleanup)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"reaper: {message}", flush=True)


def reaper_environment(token: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The reaper's whole environment: the token and :data:`PASSED_ENV`, nothing else."""
    source = dict(os.environ) if environ is None else environ
    env = {name: source[name] for name in PASSED_ENV if name in source}
    env[TOKEN_ENV] = token
    return env


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_pids(ledger: Ledger) -> set[int]:
    pids = set()
    for entry in ledger.alive():
        _, _, pid = entry.owner.rpartition(":")
        if pid.isdigit() and int(pid) != os.getpid():
            pids.add(int(pid))
    return pids


class ReaperProcess:
    """Handle on a running reaper, held by the pytest process that started it."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    @classmethod
    def start(
        cls,
        *,
        ledger_path: Path,
        base_url: str,
        token: str,
        run_id: str,
        project_id: str,
        team_id: str | None = None,
        log_path: Path | None = None,
        run_dir: Path | None = None,
    ) -> ReaperProcess:
        """Start watching; ``run_dir`` (the run's files) is removed once the reaper has deleted
        everything, as pytest itself removes it after a clean finish."""
        argv = [sys.executable, "-m", "pytest_northflank.run.reaper", "--ledger", str(ledger_path)]
        argv += ["--base-url", base_url, "--run-id", run_id, "--project", project_id]
        if team_id:
            argv += ["--team", team_id]
        if run_dir is not None:
            argv += ["--run-dir", str(run_dir)]
        env = reaper_environment(token)
        log_path = log_path or ledger_path.with_name(RunDir.REAPER_LOG)
        with os.fdopen(private_file(log_path), "ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                env=env,
                # Its own session: Ctrl-C and a terminal hang-up reach pytest, not the reaper.
                start_new_session=True,
            )
        if run_dir is not None:
            RunDir(run_dir).write_pid(RunDir.REAPER_PID, process.pid)
        return cls(process)

    @property
    def pid(self) -> int:
        return self._process.pid

    def abandon(self) -> None:
        """Let go without saying ``clean``: the reaper sweeps what the ledger still lists.

        It may outlive pytest doing so; the handle is parked so that it is not collected
        (and warned about) while the reaper still runs.
        """
        if self._process.stdin is not None:
            # OSError: the reaper is gone already; the pipe's end is what it waited for.
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        _ABANDONED.append(self._process)

    def finish_clean(self, timeout: float = 10.0) -> None:
        """Tell the reaper the run cleaned up after itself; it exits touching nothing."""
        stdin: IO[bytes] | None = self._process.stdin
        if stdin is not None and not stdin.closed:
            try:
                stdin.write(CLEAN)
                stdin.close()
            except BrokenPipeError:
                pass
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _listed_entries(client: NorthflankClient, run_id: str, project_id: str) -> list[LedgerEntry]:
    """This run's services as the project lists them (name and description both say so)."""
    return [
        LedgerEntry(
            name=service.name,
            project_id=project_id,
            worker_id="?",
            owner="?",
            state="created",
            service_id=service.id,
        )
        for service in client.list_services(project_id)
        if verified_owner(run_id, service.name, service.description)
    ]


def _to_reap(
    client: NorthflankClient, ledger: Ledger, run_id: str, project_id: str | None
) -> list[LedgerEntry]:
    """What the ledger lists alive, plus (when the ledger is missing, unreadable or damaged)
    the run's services found by listing the project."""
    trusted = True
    try:
        alive = ledger.alive()
        if not ledger.path.exists() or ledger.skipped_lines:
            trusted = False
    except OSError as error:
        say(f"cannot read the ledger {ledger.path} ({error.strerror}); listing the project")
        alive, trusted = [], False
    if trusted or project_id is None:
        return alive
    known = {entry.name for entry in alive}
    found = [
        entry for entry in _listed_entries(client, run_id, project_id) if entry.name not in known
    ]
    if found:
        say(f"found {len(found)} service(s) of run {run_id} by listing project {project_id}")
    return alive + found


def reap(
    ledger: Ledger,
    base_url: str,
    token: str,
    team_id: str | None,
    *,
    run_id: str,
    project_id: str | None = None,
    give_up_after: float = GIVE_UP_AFTER,
) -> int:
    """Delete what the run left behind; return how many entries were not deleted (could not
    be, or were skipped as not verifiably the run's)."""
    # Workers may outlive the controller for a moment and still be creating: wait for them
    # (bounded), then sweep until nothing of the run is left alive.
    wait_until = time.monotonic() + 30.0
    try:
        while _owner_pids(ledger) and any(map(pid_alive, _owner_pids(ledger))):
            if time.monotonic() > wait_until:
                break
            time.sleep(0.2)
    except OSError:
        pass  # an unreadable ledger: the listing below finds the run's services
    deadline = time.monotonic() + give_up_after
    skipped: set[str] = set()
    left: list[LedgerEntry] = []
    with NorthflankClient(token, base_url=base_url, team_id=team_id) as client:
        for _ in range(5):
            try:
                left = [
                    e for e in _to_reap(client, ledger, run_id, project_id) if e.name not in skipped
                ]
            except NorthflankError as error:
                say(f"cannot list project {project_id}: {error}")
                left = ledger.alive() if ledger.path.exists() else []
            if not left:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            result = sweep(client, ledger, left, run_id=run_id, give_up_after=remaining)
            for name, reason in result.skipped.items():
                if name not in skipped:
                    say(f"not deleting {name}: {reason}")
            skipped.update(result.skipped)
            for name, reason in result.failed.items():
                say(f"could not delete {name}: {reason}")
            say(f"deleted {len(result.deleted)} service(s)")
            if result.absent:
                say(
                    f"{len(result.absent)} service(s) of the ledger did not exist "
                    "(never created, or deleted from outside the run)"
                )
            left = [e for e in left if e.name in result.failed]
            if not left:
                break
    for note in take_damage_notes():
        say(note)
    # Skipped entries count too: the ledger and this log stay for a human to look at.
    return len(left) + len(skipped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_northflank.run.reaper")
    parser.add_argument("--ledger", type=Path, required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--project", default=None)
    parser.add_argument("--team", default=None)
    parser.add_argument("--run-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    token = os.environ.get(TOKEN_ENV, "")
    message = sys.stdin.buffer.read()  # blocks until pytest closes the pipe or dies
    if message.strip() == CLEAN:
        return 0
    say(f"pytest ended without cleaning up; sweeping run {args.run_id}")
    try:
        left = reap(
            Ledger(args.ledger),
            args.base_url,
            token,
            args.team,
            run_id=args.run_id,
            project_id=args.project,
        )
    except Exception as error:  # whatever went wrong, say it and keep the ledger for `reap`
        say(f"stopped: {type(error).__name__}: {error}")
        return 1
    if left:
        return 1  # the ledger and this log stay, for `pytest-northflank reap` and for a human
    if args.run_dir is not None:
        shutil.rmtree(args.run_dir, ignore_errors=True)
    for leftover in (args.ledger, args.ledger.with_name(args.ledger.name + ".lock")):
        with contextlib.suppress(OSError):
            leftover.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
