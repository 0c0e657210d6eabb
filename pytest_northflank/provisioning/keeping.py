"""The end of a sandbox's scope: delete it, or keep it and say why.

A kept sandbox says why on the service itself: its description gets ``kept=<why>
test=<node id>`` (see :mod:`pytest_northflank.run.ownership`), which ``pytest-northflank list``
reads back from any machine. :class:`Releasing` is the provisioner's releasing half, apart so
that each module stays readable.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

from pytest_northflank.errors import NorthflankError, ProvisioningError
from pytest_northflank.run.ownership import DESCRIPTION_PREFIX, kept_description
from pytest_northflank.run.stats import KeptSandbox, RunStats

if TYPE_CHECKING:
    from pytest_northflank.client import NorthflankClient
    from pytest_northflank.config.settings import Settings
    from pytest_northflank.provisioning.readiness import ReadinessBoard
    from pytest_northflank.provisioning.warm_ahead import WarmPool
    from pytest_northflank.run.ledger import Ledger
    from pytest_northflank.sandbox import Sandbox


def record_kept(client: NorthflankClient, sandbox: Sandbox, kept: KeptSandbox) -> str | None:
    """Write why ``sandbox`` was kept into its description; a sentence saying what went wrong
    (keeping it must not fail a teardown over a note), or None."""
    if sandbox.failed_tests:
        test: str | None = sandbox.failed_tests[0]
    else:
        test = sandbox.tests[0] if sandbox.tests else None
    try:
        description = client.get_service(sandbox.project_id, sandbox.id).description or ""
        if not description.startswith(DESCRIPTION_PREFIX + " "):
            return None  # not described by this tool: nothing to add to
        client.set_service_description(
            sandbox.project_id, sandbox.id, kept_description(description, kept.reason, test)
        )
    except NorthflankError as error:
        return f"could not record on {sandbox.name} why it was kept: {error}"
    return None


# Releasing many sandboxes that takes longer than this shows progress lines.
RELEASE_PROGRESS_AFTER = 5.0


class Releasing(ABC):
    """Deleting or keeping sandboxes at the end of their scope; mixed into the provisioner,
    whose state it names here."""

    client: NorthflankClient
    settings: Settings
    stats: RunStats
    project_id: str
    ledger: Ledger | None
    pool: WarmPool | None
    board: ReadinessBoard
    alive: list[Sandbox]
    progress: Callable[[str], None] | None
    _lock: threading.Lock
    _clock: Callable[[], float]

    @abstractmethod
    def delete(self, sandbox: Sandbox, *, by: str = "pytest-northflank") -> bool:
        """Delete the sandbox's service (the provisioner's create/wait/delete half)."""

    def release(self, sandbox: Sandbox) -> None:
        """End of the sandbox's scope: delete it, or keep it when its keep mode says so."""
        __tracebackhide__ = True  # users need the message, not our frames
        if sandbox.deleted or sandbox.kept:
            return
        self.client.stop_forwarding(self.project_id, sandbox.id)  # the test's side ends here
        keep = sandbox.options.keep
        if keep == "always" or (keep == "on-failure" and sandbox.failed_tests):
            sandbox.kept = True
            with self._lock:
                if sandbox in self.alive:
                    self.alive.remove(sandbox)
            if self.ledger is not None:
                self.ledger.record_kept(sandbox.name)
            self._keep(sandbox)
            return
        self.delete(sandbox, by="pytest-northflank at the end of the scope that asked for it")

    def _keep(self, sandbox: Sandbox) -> None:
        kept = KeptSandbox.of(sandbox, self.settings)
        problem = record_kept(self.client, sandbox, kept)
        with self._lock:
            self.stats.kept.append(kept)
            if problem is not None:
                self.stats.cleanup_notes.append(problem)

    def release_leftovers(self) -> None:
        """Release every sandbox no scope released (made from a thread, say) and delete those
        made ahead that no test took; report failures."""
        errors = []
        if self.pool is not None:
            pool, self.pool = self.pool, None
            try:
                pool.close()
            except (NorthflankError, OSError) as error:  # OSError: the shelf file is gone
                errors.append(str(error))
            with self._lock:
                self.stats.made_ahead += pool.made
                self.stats.note_warm_ahead(pool.policy.mode, pool.depth_reached)
        self.board.close()
        leftovers = list(self.alive)
        started = self._clock()
        next_progress = started + RELEASE_PROGRESS_AFTER
        for done, sandbox in enumerate(leftovers, 1):
            try:
                self.release(sandbox)
            except NorthflankError as error:
                errors.append(str(error))
            now = self._clock()
            if self.progress is not None and now >= next_progress and done < len(leftovers):
                self.progress(
                    f"releasing sandboxes: {done} of {len(leftovers)} after {now - started:.0f} s"
                )
                next_progress = now + RELEASE_PROGRESS_AFTER
        if errors:
            raise ProvisioningError("\n".join(errors))

    def _after_failure(self, sandbox: Sandbox) -> str:
        """Delete a sandbox that never became ready (unless asked to keep), and say so."""
        if sandbox.options.keep != "never":
            sandbox.kept = True
            if self.ledger is not None:
                self.ledger.record_kept(sandbox.name)
            self._keep(sandbox)
            return f"\nKept for inspection (keep={sandbox.options.keep}): {sandbox.dashboard_url}"
        try:
            existed = self.delete(sandbox)
        except ProvisioningError as error:
            return f"\n{error}"
        if not existed:
            return "\nThe sandbox was already gone (deleted from outside this run)."
        return "\nThe sandbox was deleted."
