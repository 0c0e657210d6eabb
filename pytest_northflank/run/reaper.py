"""The reaper: a separate process that deletes a run's services if pytest dies without cleaning up.

pytest starts it once per run (real backend only) with a pipe on its stdin, the way
testcontainers' Ryuk watches its client, but with no container. pytest writes ``clean`` and closes
the pipe after its own session-end sweep; any other end of the pipe (SIGKILL, OOM kill, a crash)
reaches the reaper as end-of-file without ``clean``, and it then deletes every service of the run
the ledger still lists, retrying through API errors, and exits. It only ever reads this run's
ledger, so it cannot delete another run's services.

The API token travels in the environment (``NORTHFLANK_API_TOKEN``), never on the command line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from pytest_northflank.client import NorthflankClient
from pytest_northflank.run.files import RunDir
from pytest_northflank.run.ledger import Ledger
from pytest_northflank.run.sweep import sweep

CLEAN = b"clean"
_ABANDONED: list[subprocess.Popen[bytes]] = []
TOKEN_ENV = "NORTHFLANK_API_TOKEN"


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
        team_id: str | None = None,
        log_path: Path | None = None,
        run_dir: Path | None = None,
    ) -> ReaperProcess:
        """Start watching; ``run_dir`` (the run's files) is removed once the reaper has deleted
        everything, as pytest itself removes it after a clean finish."""
        argv = [sys.executable, "-m", "pytest_northflank.run.reaper", "--ledger", str(ledger_path)]
        argv += ["--base-url", base_url]
        if team_id:
            argv += ["--team", team_id]
        if run_dir is not None:
            argv += ["--run-dir", str(run_dir)]
        env = dict(os.environ)
        env[TOKEN_ENV] = token
        log_path = log_path or ledger_path.with_name(RunDir.REAPER_LOG)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                env=env,
                # Its own session: Ctrl-C and a terminal hang-up reach pytest, not the reaper.
                start_new_session=True,
            )
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


def reap(ledger: Ledger, base_url: str, token: str, team_id: str | None) -> int:
    """Delete what the run left behind; return the number of services that could not be deleted."""
    # Workers may outlive the controller for a moment and still be creating: wait for them
    # (bounded), then sweep until the ledger lists nothing alive.
    wait_until = time.monotonic() + 30.0
    while _owner_pids(ledger) and any(map(pid_alive, _owner_pids(ledger))):
        if time.monotonic() > wait_until:
            break
        time.sleep(0.2)
    with NorthflankClient(token, base_url=base_url, team_id=team_id) as client:
        for _ in range(5):
            alive = ledger.alive()
            if not alive:
                return 0
            result = sweep(client, ledger, alive, give_up_after=300.0)
            for name, reason in result.failed.items():
                print(f"reaper: could not delete {name}: {reason}", flush=True)
            print(f"reaper: deleted {len(result.deleted)} service(s)", flush=True)
            if result.absent:
                print(
                    f"reaper: {len(result.absent)} service(s) of the ledger did not exist "
                    "(never created, or deleted from outside the run)",
                    flush=True,
                )
        return len(ledger.alive())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_northflank.run.reaper")
    parser.add_argument("--ledger", type=Path, required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--team", default=None)
    parser.add_argument("--run-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    token = os.environ.get(TOKEN_ENV, "")
    message = sys.stdin.buffer.read()  # blocks until pytest closes the pipe or dies
    if message.strip() == CLEAN:
        return 0
    print(f"reaper: pytest ended without cleaning up; sweeping {args.ledger}", flush=True)
    left = reap(Ledger(args.ledger), args.base_url, token, args.team)
    if left:
        return 1  # the ledger and this log stay, for `pytest-northflank reap` and for a human
    if args.run_dir is not None:
        shutil.rmtree(args.run_dir, ignore_errors=True)
    for leftover in (args.ledger, args.ledger.with_name(args.ledger.name + ".lock")):
        leftover.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
