"""Who this process is in a pytest run, and where the run keeps its files. No pytest import.

The xdist glue builds one :class:`Run` per pytest process in ``pytest_configure`` (the only code
that reads ``workerinput``) and every layer below gets it explicitly.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from pytest_northflank.run.files import RunDir, runs_root
from pytest_northflank.run.ledger import Ledger
from pytest_northflank.run.ownership import new_run_id
from pytest_northflank.run.stats import RunStats


@dataclass
class Run:
    """One pytest process's place in its run: the run id, the worker, the run's files and
    ledger, and what the process did (``stats``)."""

    worker_id: str = "master"
    #: True in the xdist controller, and in a run without xdist (the only process).
    is_controller: bool = True
    #: This process's owner token in the ledger: the xdist controller gives each worker process
    #: a fresh one, so a crashed worker's replacement is a different owner.
    instance: str | None = None
    #: 1 when this process runs every collected test (no xdist, ``--dist each``); otherwise the
    #: number of xdist workers the tests are dealt out to.
    processes_sharing_tests: int = 1
    #: Given by the xdist controller, or made on first use (most runs never need one).
    given_run_id: str | None = None
    #: A random secret of the run, kept in memory only (xdist workers get the controller's):
    #: keys what the run writes that is derived from secrets (warm-ahead's spec keys).
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    stats: RunStats = field(default_factory=RunStats)
    _ledger: Ledger | None = field(default=None, repr=False)

    @property
    def run_id(self) -> str:
        if self.given_run_id is None:
            self.given_run_id = new_run_id()
        return self.given_run_id

    @property
    def run_dir(self) -> Path:
        """Files shared by the processes of this run (the ledger, locks), in this user's
        private runs directory (see :func:`~pytest_northflank.run.files.runs_root`)."""
        return runs_root() / f"run-{self.run_id}"

    @property
    def files(self) -> RunDir:
        return RunDir(self.run_dir)

    @property
    def ledger(self) -> Ledger:
        """The run ledger, shared by every process of the run."""
        if self._ledger is None:
            self._ledger = Ledger(self.files.ledger)
        return self._ledger

    @property
    def ledger_owner(self) -> str:
        return f"{self.instance or self.worker_id}:{os.getpid()}"
