"""Deleting a run's services: the sweep shared by every cleanup path.

Four paths end in :func:`sweep`: a fixture's teardown (one service), the xdist controller when a
worker goes down with an error (that worker's services), the end of the session (whatever of this
run is still alive) and the reaper process when pytest died (everything of the run). They all
read the same ledger, and a delete that finds the service gone counts as done (but not as a
deletion: the sweep reports only the services it really deleted).

The ledger only says where to look. Before any delete the sweep checks that the name is one
this tool gives in this run, and reads the service afresh: its name and its ownership
description must both name this run. Anything else is skipped and reported
(``SweepResult.skipped``), never deleted, whatever the ledger says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pytest_northflank.client import NorthflankClient
from pytest_northflank.errors import (
    NorthflankError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from pytest_northflank.run.files import RunDirError
from pytest_northflank.run.ledger import Ledger, LedgerEntry
from pytest_northflank.run.ownership import delete_refusal, is_name_of_run

log = logging.getLogger("pytest_northflank.plugin.session")

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
    #: Ledger entries not deleted because they are not verifiably this run's, with the reason.
    skipped: dict[str, str] = field(default_factory=dict)
    #: Done, but the ledger could not be written to say so (why).
    unrecorded: dict[str, str] = field(default_factory=dict)


def verify(
    client: NorthflankClient, run_id: str, entry: LedgerEntry, service_id: str
) -> str | None:
    """Why the service ``service_id`` must not be deleted as ``entry``, or None when a fresh
    read shows it is this run's (its name is the entry's, and name and description name the
    run). Raises ``NotFoundError`` when it is gone."""
    service = client.get_service(entry.project_id, service_id)
    refusal = delete_refusal(run_id, entry.name, service.name, service.description)
    return None if refusal is None else f"the ledger's id {service_id}: {refusal}"


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
    run_id: str,
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
    pending = []
    for entry in entries:
        if not entry.alive:
            continue
        if is_name_of_run(entry.name, run_id):
            pending.append(entry)
        else:
            result.skipped[entry.name] = f"{entry.name!r} is not a name this run gives"
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
                refusal = None if service_id is None else verify(client, run_id, entry, service_id)
                if refusal is not None:
                    result.skipped[entry.name] = refusal
                    result.failed.pop(entry.name, None)
                    continue
                existed = service_id is not None and (
                    client.delete_service(entry.project_id, service_id) or entry.name in delete_sent
                )
            except NotFoundError:
                # Gone (or its project is): a delete sent before that failed in transit did it.
                existed = entry.name in delete_sent
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
            try:
                ledger.record_deleted(entry.name, found=existed)
            except (OSError, RunDirError) as error:  # a full disk, a removed run dir: go on
                result.unrecorded[entry.name] = str(error)
            result.failed.pop(entry.name, None)
            (result.deleted if existed else result.absent).append(entry.name)
        pending = retry
        if pending:
            if time.monotonic() + delay > deadline:
                break
            sleep(delay)
            delay = min(delay * 2, 10.0)
    return result
