"""Waiting for deployments to become ready, with as few API requests as the wait allows.

One :class:`ReadinessBoard` per process keeps the latest status of every service someone waits
for (a test, or the warm-ahead pool) and one background thread polls for all of them:

* with one service pending it asks for that service (``GET .../services/{id}``); with several,
  one ``list services`` answer carries the status of all of them, so it lists instead (as long
  as the listing fits in fewer pages than there are services to ask about);
* a listing another process of the run made after this one's last poll answers instead of a
  request of its own (:class:`~pytest_northflank.budget.SharedListing`);
* each service is polled quickly at first, backing off to one poll every few seconds; once the
  process has seen how long provisioning takes, the first poll waits until about then;
* when the run's shared rate-limit figures (:mod:`.budget`) say the quota is
  running low, polls are spread out to fit what is left, and stop until the reset at zero.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pytest_northflank.errors import NorthflankError, TransportError

if TYPE_CHECKING:
    from pytest_northflank.client import NorthflankClient
    from pytest_northflank.provisioning.budget import SharedListing, SharedQuota

# The first poll, and the shortest gap between two polls of a service.
FIRST_POLL = 0.2
# Each gap is this share of the time waited so far (plus the first gap): a sandbox ready after
# T seconds is seen ready at most about T/2 late, and a first 30 s wait costs 12 polls.
BACKOFF_SHARE = 0.5
# The longest gap: provisioning takes seconds to minutes, and every poll spends hourly quota.
MAX_POLL = 6.0
# Once provisioning times are known (each one taken halfway between the last poll that saw
# the service not ready and the first that saw it ready), the first poll comes at the usual
# time, and later polls start this fraction of it apart, backing off from there.
AFTER_EXPECTED_STEP = 1 / 32
# One listing answers for every pending service, so with several pending (and no provisioning
# time known yet) it may come this many times as often as one service's schedule asks (never
# more often than FIRST_POLL).
MAX_LISTING_SPEEDUP = 4
ESTIMATE_SAMPLES = 8
# How often a wait held back by the shared rate-limit figures reads them again.
QUOTA_RECHECK = 1.0
# Services per page of a listing (the client asks for the API's maximum).
LIST_PAGE_SIZE = 100


@dataclass(frozen=True)
class Readiness:
    """What the board knows of one service. ``error`` is an API failure while polling it."""

    service_id: str
    name: str
    status: str | None
    reason: str | None
    error: NorthflankError | None = None

    @property
    def settled(self) -> bool:
        return self.status in ("COMPLETED", "FAILED") or self.error is not None


# A poll's answer for one service: (status, reason), an error, or None (missing from a listing).
_Result = tuple[str | None, str | None] | NorthflankError | None


@dataclass
class _Watched:
    readiness: Readiness
    created_at: float
    deadline: float
    next_due: float
    # Missing from the last listing (a listing may lag behind a create): ask for it by id.
    ask_by_id: bool = False
    on_settled: Callable[[Readiness], None] | None = None
    # When a poll last saw it not ready yet.
    last_pending: float | None = None


class ReadinessBoard:
    """The deployment status of the services this process waits for, polled by one thread.

    ``watch`` a service (from its create answer), ``wait`` for it to settle, ``forget`` it when
    done. Thread-safe; the polling thread runs only while something is pending.
    """

    def __init__(
        self,
        client: NorthflankClient,
        project_id: str,
        *,
        quota: SharedQuota | None = None,
        shared_listing: SharedListing | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.project_id = project_id
        self.quota = quota
        self.shared_listing = shared_listing
        self._clock = clock
        self._cond = threading.Condition()
        self._watched: dict[str, _Watched] = {}
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_poll = -math.inf
        self._last_poll_wall = -math.inf
        self._services_listed = 0
        self._listing_failed = False
        self._samples: deque[float] = deque(maxlen=ESTIMATE_SAMPLES)
        #: Poll requests sent (gets and listings), and listings of other processes used instead.
        self.gets = 0
        self.listings = 0
        self.borrowed = 0

    # ------------------------------------------------------------------------------ public

    def watch(
        self,
        service_id: str,
        name: str,
        *,
        status: str | None,
        reason: str | None = None,
        created_at: float,
        deadline: float,
        on_settled: Callable[[Readiness], None] | None = None,
    ) -> None:
        """Follow a service, last seen with ``status``, until ``deadline`` (``clock`` times).
        ``on_settled`` is called (from the polling thread) once a poll sees it settle."""
        with self._cond:
            current = self._watched.get(service_id)
            if current is not None:
                current.deadline = max(current.deadline, deadline)
            else:
                readiness = Readiness(service_id, name, status, reason)
                self._watched[service_id] = _Watched(
                    readiness, created_at, deadline, self._first_due(created_at), False, on_settled
                )
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._poll_forever, name="northflank-readiness", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def wait(self, service_id: str, *, until: float) -> Readiness:
        """The service's status once it settles (ready, failed, polling failed) or at ``until``."""
        with self._cond:
            while True:
                watched = self._watched[service_id]
                remaining = until - self._clock()
                if watched.readiness.settled or remaining <= 0:
                    return watched.readiness
                self._cond.wait(remaining)

    def forget(self, service_id: str) -> None:
        with self._cond:
            self._watched.pop(service_id, None)

    def estimate(self) -> float | None:
        """The usual time from create to ready in this process, once seen."""
        with self._cond:
            return statistics.median(self._samples) if self._samples else None

    def close(self) -> None:
        """Stop polling for good (the end of the session); idempotent."""
        with self._cond:
            self._closed = True
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # ------------------------------------------------------------------------ scheduling

    def _first_due(self, created_at: float) -> float:
        first = created_at + FIRST_POLL
        if self._samples:
            first = max(first, created_at + statistics.median(self._samples))
        return first

    def _next_due(self, watched: _Watched, now: float) -> float:
        # Each gap grows with the time the service has been waiting: quick at first, then
        # backing off; after a known provisioning time, counted from when it was expected.
        anchor, least = watched.created_at, FIRST_POLL
        if self._samples:
            usual = statistics.median(self._samples)
            expected = watched.created_at + usual
            if now + FIRST_POLL < expected:
                return expected
            anchor, least = expected, max(FIRST_POLL, usual * AFTER_EXPECTED_STEP)
        gap = BACKOFF_SHARE * (now - anchor) + least
        return now + min(max(gap, FIRST_POLL), MAX_POLL)

    def _spacing(self) -> float:
        return self.quota.spacing() if self.quota is not None else 0.0

    # --------------------------------------------------------------------------- polling

    def _poll_forever(self) -> None:
        while True:
            with self._cond:
                round_ = self._next_round()
                if round_ is None:
                    return
            listed, by_id, borrowed = round_
            seen_at = None
            if borrowed is not None:
                # Seen when the other process asked, not now.
                seen_at = self._clock() - max(time.time() - borrowed[0], 0.0)
                results = borrowed[1]
            else:
                try:
                    results = self._fetch(listed, by_id)
                except Exception as error:  # the waiters must hear of it rather than hang
                    failure = TransportError(
                        f"polling readiness failed: {type(error).__name__}: {error}"
                    )
                    results = dict.fromkeys([*listed, *by_id], failure)
            with self._cond:
                settled = self._apply(results, seen_at)
                self._cond.notify_all()
            for callback, readiness in settled:
                callback(readiness)

    def _next_round(
        self,
    ) -> tuple[list[str], list[str], tuple[float, dict[str, _Result]] | None] | None:
        """Wait (holding the condition) until a poll is due, then say which services to list
        and which to ask for by id, or give the answers of another process's newer listing;
        None when nothing is pending any more."""
        while True:
            if self._closed:
                return None
            now = self._clock()
            pending = [
                (service_id, watched)
                for service_id, watched in self._watched.items()
                if not watched.readiness.settled and now < watched.deadline
            ]
            if not pending:
                self._thread = None
                return None
            due = min(watched.next_due for _, watched in pending)
            listable = [service_id for service_id, watched in pending if not watched.ask_by_id]
            by_listing = self._worth_listing(len(listable))
            if by_listing and not self._samples:
                # One listing answers for them all: until provisioning times are known, poll
                # more often than one service would.
                speedup = min(len(listable), MAX_LISTING_SPEEDUP)
                since = max(self._last_poll, min(watched.created_at for _, watched in pending))
                due = min(due, max(since + (due - since) / speedup, since + FIRST_POLL))
            spacing = self._spacing()
            if spacing > 0:
                due = max(due, self._last_poll + spacing)
            if due <= now:
                break
            # While the quota holds polls back, look at the shared figures again now and then:
            # another process may have seen the window reset.
            self._cond.wait(min(due - now, QUOTA_RECHECK) if spacing > 0 else due - now)
        self._last_poll, previous_wall = now, self._last_poll_wall
        self._last_poll_wall = time.time()
        by_id = [service_id for service_id, watched in pending if watched.ask_by_id]
        if by_listing and not by_id and self.shared_listing is not None:
            newer = self.shared_listing.newer_than(previous_wall)
            if newer is not None and all(service_id in newer[1] for service_id in listable):
                self.borrowed += 1
                answers: dict[str, _Result] = {sid: newer[1][sid] for sid in listable}
                return [], [], (newer[0], answers)
        if by_listing:
            return listable, by_id, None
        most_overdue = min(pending, key=lambda item: item[1].next_due)
        return [], [most_overdue[0]], None

    def _worth_listing(self, services: int) -> bool:
        """Whether one listing (as many requests as it has pages) beats asking one by one."""
        pages = max(1, math.ceil(self._services_listed / LIST_PAGE_SIZE))
        return not self._listing_failed and services >= 2 and services > pages

    def _fetch(self, listed: list[str], by_id: list[str]) -> dict[str, _Result]:
        """Ask the API: one listing for ``listed``, one request each for ``by_id``."""
        results: dict[str, _Result] = {}
        if listed:
            asked_at = self._last_poll_wall  # this round's start: its own listing is not newer
            try:
                self.listings += 1
                listing = self.client.list_services(self.project_id)
            except NorthflankError:
                # A token may read services without listing them: ask one by one from now on.
                self._listing_failed = True
                by_id = [*by_id, listed[0]]
            else:
                self._services_listed = len(listing)
                found = {summary.id: summary for summary in listing}
                if self.shared_listing is not None:
                    self.shared_listing.publish(
                        asked_at,
                        {s.id: (s.deployment_status, s.deployment_reason) for s in listing},
                    )
                for service_id in listed:
                    summary = found.get(service_id)
                    results[service_id] = (
                        None
                        if summary is None
                        else (summary.deployment_status, summary.deployment_reason)
                    )
        for service_id in by_id:
            try:
                self.gets += 1
                service = self.client.get_service(self.project_id, service_id)
            except NorthflankError as error:
                results[service_id] = error
            else:
                results[service_id] = (service.deployment_status, service.deployment_reason)
        if self.quota is not None:
            self.quota.publish(self.client.rate_limit)
        return results

    def _apply(
        self, results: dict[str, _Result], seen_at: float | None = None
    ) -> list[tuple[Callable[[Readiness], None], Readiness]]:
        """Record a poll's answers (as of ``seen_at``, a ``clock`` time; default: now);
        returns the callbacks due for services that settled."""
        now = self._clock() if seen_at is None else seen_at
        settled = []
        for service_id, result in results.items():
            watched = self._watched.get(service_id)
            if watched is None:
                continue  # forgotten meanwhile
            if result is None:
                watched.ask_by_id = True  # not in the listing (yet): ask for it next
                watched.next_due = now
                continue
            watched.ask_by_id = False
            if isinstance(result, NorthflankError):
                watched.readiness = replace(watched.readiness, error=result)
            else:
                status, reason = result
                if status == "COMPLETED":
                    since = watched.last_pending
                    ready_at = now if since is None else (since + now) / 2
                    self._samples.append(ready_at - watched.created_at)
                else:
                    watched.last_pending = now
                watched.readiness = replace(watched.readiness, status=status, reason=reason)
                watched.next_due = self._next_due(watched, now)
            if watched.readiness.settled and watched.on_settled is not None:
                settled.append((watched.on_settled, watched.readiness))
                watched.on_settled = None
        return settled
