"""Deleting a run's services: the sweep shared by every cleanup path, and signal handling.

Four paths end in :func:`sweep`: a fixture's teardown (one service), the xdist controller when a
worker goes down with an error (that worker's services), the end of the session (whatever of this
run is still alive) and the reaper process when pytest died (everything of the run). They all
read the same ledger, and a delete that finds the service gone counts as done (but not as a
deletion: the sweep reports only the services it really deleted).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

from pytest_northflank.errors import (
    NorthflankError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from pytest_northflank.ledger import Ledger, LedgerEntry

if TYPE_CHECKING:
    from pytest_northflank.client import NorthflankClient
    from pytest_northflank.plugin import PluginState
    from pytest_northflank.settings import Settings

log = logging.getLogger("pytest_northflank.cleanup")

# Errors worth waiting out: the API is briefly down, overloaded, or over its quota.
TRANSIENT_ERRORS = (ServerError, TransportError, RateLimitedError)


@dataclass
class SweepResult:
    """What a sweep did: names of services it deleted; names no service had (``absent``: the
    create never arrived, or the service was deleted from outside the run), and names it could
    not delete, with the reason."""

    deleted: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _find_service_id(
    client: NorthflankClient, entry: LedgerEntry, listing: dict[str, dict[str, str]]
) -> str | None:
    """The id of a service; one recorded only as an intent may or may not exist."""
    if entry.service_id:
        return entry.service_id
    if entry.project_id not in listing:
        listing[entry.project_id] = {
            service.name: service.id for service in client.list_services(entry.project_id)
        }
    return listing[entry.project_id].get(entry.name)


def sweep(
    client: NorthflankClient,
    ledger: Ledger,
    entries: Iterable[LedgerEntry],
    *,
    give_up_after: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
) -> SweepResult:
    """Delete ``entries`` and mark them deleted in the ledger (an entry no service answers to
    is marked done too, and reported in ``SweepResult.absent``, not as deleted).

    Transient failures (5xx, transport errors, 429) are retried with backoff for up to
    ``give_up_after`` seconds per sweep; anything else is reported in ``SweepResult.failed``
    and left in the ledger as alive, so a later sweep (or ``pytest-northflank reap``) finds it.
    """
    result = SweepResult()
    pending = [entry for entry in entries if entry.alive]
    listing: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + give_up_after
    delay = 0.5
    # Services a delete was sent for that failed transiently: found gone on the retry, the
    # failed delete most likely did its work.
    delete_sent: set[str] = set()
    while pending:
        retry: list[LedgerEntry] = []
        for entry in pending:
            service_id = None
            try:
                service_id = _find_service_id(client, entry, listing)
                existed = service_id is not None and (
                    client.delete_service(entry.project_id, service_id) or entry.name in delete_sent
                )
            except NotFoundError:
                existed = False  # the project is gone, and the service with it
            except TRANSIENT_ERRORS as exc:
                if service_id is not None:
                    delete_sent.add(entry.name)
                listing.pop(entry.project_id, None)
                result.failed[entry.name] = str(exc)
                retry.append(entry)
                continue
            except NorthflankError as exc:
                result.failed[entry.name] = str(exc)
                continue
            ledger.record_deleted(entry.name, found=existed)
            result.failed.pop(entry.name, None)
            (result.deleted if existed else result.absent).append(entry.name)
        pending = retry
        if pending:
            if time.monotonic() + delay > deadline:
                break
            sleep(delay)
            delay = min(delay * 2, 10.0)
    return result


class GracefulSignals:
    """Turn SIGTERM and SIGHUP into ``KeyboardInterrupt`` so pytest tears down as on Ctrl-C.

    Plain pytest dies on SIGTERM (what CI sends on cancel) without running any finalizer; after
    this, the fixtures' teardown and the session-end sweep run, and a second signal is not
    swallowed: it interrupts the teardown too, leaving the rest to the reaper.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self._previous: dict[int, object] = {}
        self.received: int | None = None

    def install(self) -> None:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


# --------------------------------------------------------------------------------------------
# The run's lifecycle, driven by the plugin's hooks


def guard_process(state: PluginState) -> None:
    """Make SIGTERM and SIGHUP tear down like Ctrl-C in this process (once, main thread only)."""
    import threading

    if state.signals is None and threading.current_thread() is threading.main_thread():
        state.signals = GracefulSignals()
        state.signals.install()


def start_run(state: PluginState, settings: Settings) -> None:
    """In the controller (or the only process) of a run on Northflank: start the reaper.

    From here on, whatever way pytest ends, the run's services are deleted: by the fixtures'
    teardown, by :func:`finish_run`, or by the reaper if pytest dies before either.
    """
    from pytest_northflank.reaper import ReaperProcess

    guard_process(state)
    if settings.backend_in_use != "northflank" or settings.token is None:
        return  # the embedded emulator dies with pytest, and its sandboxes with it
    state.run_dir.mkdir(parents=True, exist_ok=True)
    state.reaper = ReaperProcess.start(
        ledger_path=state.ledger.path,
        base_url=settings.api_url,
        token=settings.token.get_secret_value(),
        team_id=settings.team,
        run_dir=state.run_dir,
    )


def _sweep_with_new_client(
    state: PluginState, settings: Settings, entries: list[LedgerEntry]
) -> SweepResult:
    from pytest_northflank.provisioning import open_client

    client = open_client(state, settings)
    try:
        return sweep(client, state.ledger, entries)
    finally:
        client.close()
        state.clients.remove(client)


def _notes(result: SweepResult, what: str, run_id: str) -> list[str]:
    notes = []
    if result.deleted:
        notes.append(f"{what}: deleted {len(result.deleted)} sandbox(es) left behind")
    for name, reason in result.failed.items():
        notes.append(
            f"could not delete {name}: {reason}; the reaper keeps trying, or run: "
            f"pytest-northflank reap --run {run_id} --yes"
        )
    return notes


def finish_run(state: PluginState) -> None:
    """End of the session in the controller: delete what the run left alive, release the reaper.

    Services that could not be deleted stay in the ledger, and the reaper is then *not* told
    the run is clean, so it keeps trying after pytest exits.
    """
    from pytest_northflank import shared_emulator

    failed = False
    try:
        if state.ledger.path.exists():
            alive = state.ledger.alive()
            if alive:
                result = _sweep_with_new_client(state, state.require_settings(), alive)
                failed = bool(result.failed)
                stats = state.require_stats()
                # The run-wide shared sandbox ends here by design; anything else leaked.
                shared = {entry.name for entry in alive if entry.shared}
                stats.deleted += len(shared.intersection(result.deleted))
                result.deleted = [name for name in result.deleted if name not in shared]
                stats.cleanup_notes += _notes(result, "end of session", state.run_id)
    finally:
        shared_emulator.stop(state.run_dir)
        if state.reaper is not None:
            reaper, state.reaper = state.reaper, None
            if failed:
                reaper.abandon()
            else:
                reaper.finish_clean()
        if not failed:
            import shutil

            shutil.rmtree(state.run_dir, ignore_errors=True)
        if state.signals is not None:
            state.signals.uninstall()
            state.signals = None


def clean_up_after_worker(state: PluginState, worker_id: str, instance: str) -> None:
    """A worker went down with an error: delete the services that worker process made."""
    owned = [
        entry
        for entry in state.ledger.alive(include_shared=False)
        if entry.owner.startswith(f"{instance}:")
    ]
    if owned:
        result = _sweep_with_new_client(state, state.require_settings(), owned)
        state.require_stats().cleanup_notes += _notes(
            result, f"worker {worker_id} crashed", state.run_id
        )
