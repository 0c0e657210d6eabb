"""Deleting a run's services: the sweep shared by every cleanup path, and signal handling.

Four paths end in :func:`sweep`: a fixture's teardown (one service), the xdist controller when a
worker goes down with an error (that worker's services), the end of the session (whatever of this
run is still alive) and the reaper process when pytest died (everything of the run). They all
read the same ledger, and a delete that finds the service gone counts as done.
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

log = logging.getLogger("pytest_northflank.cleanup")

# Errors worth waiting out: the API is briefly down, overloaded, or over its quota.
TRANSIENT_ERRORS = (ServerError, TransportError, RateLimitedError)


@dataclass
class SweepResult:
    """What a sweep did: names deleted (or found gone) and names it could not delete."""

    deleted: list[str] = field(default_factory=list)
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
    """Delete ``entries`` and mark them deleted in the ledger.

    Transient failures (5xx, transport errors, 429) are retried with backoff for up to
    ``give_up_after`` seconds per sweep; anything else is reported in ``SweepResult.failed``
    and left in the ledger as alive, so a later sweep (or ``pytest-northflank reap``) finds it.
    """
    result = SweepResult()
    pending = [entry for entry in entries if entry.alive]
    listing: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + give_up_after
    delay = 0.5
    while pending:
        retry: list[LedgerEntry] = []
        for entry in pending:
            try:
                service_id = _find_service_id(client, entry, listing)
                if service_id is not None:
                    client.delete_service(entry.project_id, service_id)
            except NotFoundError:
                pass  # already gone: that is what we wanted
            except TRANSIENT_ERRORS as exc:
                listing.pop(entry.project_id, None)
                result.failed[entry.name] = str(exc)
                retry.append(entry)
                continue
            except NorthflankError as exc:
                result.failed[entry.name] = str(exc)
                continue
            ledger.record_deleted(entry.name)
            result.failed.pop(entry.name, None)
            result.deleted.append(entry.name)
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
