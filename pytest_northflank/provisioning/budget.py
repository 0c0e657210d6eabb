"""The API's hourly request quota, and requests shared by every process of a run.

Northflank answers every request with ``x-ratelimit-limit``, ``x-ratelimit-remaining`` and
``x-ratelimit-reset`` (seconds until the window resets; 1000 requests an hour by default). Each
process of a run (xdist workers included) writes the latest figures it saw into one small JSON
file in the run directory (:class:`SharedQuota`), and reads the file before the requests it can
put off (readiness polls, sandboxes made ahead). So when the quota runs low, the whole run slows
down together before it meets 429; after a 429 (``remaining`` 0) every process waits for the
reset instead of spending more refusals.

Readiness polls by listing are shared the same way (:class:`SharedListing`): a process about
to list the project's services uses another process's listing if it is newer than its own last
poll, so workers waiting at the same time spend one request, not one each.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_northflank.run.files import JsonFile, RunDir

if TYPE_CHECKING:
    from pytest_northflank.client import RateLimitStatus

FILE_NAME = RunDir.RATE_LIMIT
LISTING_FILE_NAME = RunDir.LISTING
# Below this share of the hourly limit left, requests that can wait are spread out.
LOW_SHARE = 0.25
# ...and below this many, whatever the limit (a quota of 100 is low from the start).
LOW_FLOOR = 50


@dataclass(frozen=True)
class QuotaFigures:
    """The figures of one response: ``reset_at`` and ``observed_at`` are epoch seconds."""

    limit: int | None
    remaining: int
    reset_at: float | None
    observed_at: float

    @classmethod
    def of(cls, status: RateLimitStatus) -> QuotaFigures | None:
        if status.remaining is None:
            return None
        observed = status.observed_at.timestamp()
        reset_at = None if status.reset_after is None else observed + status.reset_after
        return cls(status.limit, status.remaining, reset_at, observed)

    @property
    def is_low(self) -> bool:
        if self.remaining <= 0:
            return True
        threshold = LOW_FLOOR if self.limit is None else max(self.limit * LOW_SHARE, LOW_FLOOR)
        return self.remaining < threshold


class SharedQuota:
    """The latest rate-limit figures any process of the run saw, in ``<run dir>/rate-limit.json``.

    ``processes`` is how many processes spend the quota at once (the xdist worker count): a
    process keeps its own pace to its share of what is left.
    """

    def __init__(
        self, path: Path, *, processes: int = 1, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.processes = max(processes, 1)
        self._clock = clock
        self._file = JsonFile(path)
        self._published: RateLimitStatus | None = None

    def publish(self, status: RateLimitStatus | None) -> None:
        """Share ``status`` (a client's latest figures) unless the file holds newer ones."""
        if status is None or status is self._published:
            return
        self._published = status
        figures = QuotaFigures.of(status)
        if figures is None:
            return
        # Best effort: the figures only pace optional requests (a full disk must not fail a
        # test's teardown).
        with contextlib.suppress(OSError), self._file.lock:
            current = self._read()
            if current is not None and current.observed_at > figures.observed_at:
                return
            self._file.replace(asdict(figures))

    def figures(self) -> QuotaFigures | None:
        """The newest figures of the run, or None while nobody has seen any (or the run's
        files cannot be used any more: then nothing is paced)."""
        try:
            with self._file.lock:
                return self._read()
        except OSError:
            return None

    def _read(self) -> QuotaFigures | None:
        data = self._file.read()
        try:
            return QuotaFigures(
                limit=None if data["limit"] is None else int(data["limit"]),
                remaining=int(data["remaining"]),
                reset_at=None if data["reset_at"] is None else float(data["reset_at"]),
                observed_at=float(data["observed_at"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None  # nothing shared yet (or a file from another version): no pacing

    def spacing(self) -> float:
        """Seconds this process should leave between requests that can wait; 0 while plenty
        of the quota is left. With nothing left, the time until the window resets."""
        figures = self.figures()
        if figures is None or not figures.is_low:
            return 0.0
        if figures.reset_at is None:
            return 0.0 if figures.remaining > 0 else 1.0
        until_reset = figures.reset_at - self._clock()
        if until_reset <= 0:
            return 0.0  # a new window has begun since: the figures are stale
        if figures.remaining <= 0:
            return until_reset
        # Spread this process's share of what is left over the rest of the window.
        return min(self.processes * until_reset / figures.remaining, until_reset)

    def is_low(self) -> bool:
        """True when the run should not spend requests on anything optional (warm-ahead)."""
        figures = self.figures()
        if figures is None:
            return False
        if figures.reset_at is not None and figures.reset_at <= self._clock():
            return False
        return figures.is_low


# A service's deployment (status, reason), as a listing shows it.
Status = tuple[str | None, str | None]


class SharedListing:
    """The newest ``list services`` answer any process of the run got, in
    ``<run dir>/listing.json``: when it was asked for (epoch seconds), and each service's
    deployment status."""

    def __init__(self, path: Path, project_id: str) -> None:
        self.path = path
        self.project_id = project_id
        self._file = JsonFile(path)

    def publish(self, asked_at: float, statuses: dict[str, Status]) -> None:
        """Share a listing asked for at ``asked_at``, unless the file holds a newer one."""
        with contextlib.suppress(OSError), self._file.lock:  # best effort, as above
            current = self._read()
            if current is not None and current[0] >= asked_at:
                return
            record = {"project": self.project_id, "at": asked_at, "statuses": statuses}
            self._file.replace(record)

    def newer_than(self, moment: float) -> tuple[float, dict[str, Status]] | None:
        """The shared listing if it was asked for after ``moment`` (epoch seconds)."""
        try:
            with self._file.lock:
                current = self._read()
        except OSError:
            return None  # the run's files cannot be used any more: poll for ourselves
        return current if current is not None and current[0] > moment else None

    def _read(self) -> tuple[float, dict[str, Status]] | None:
        data = self._file.read()
        try:
            if data["project"] != self.project_id:
                return None
            statuses = {str(k): (v[0], v[1]) for k, v in data["statuses"].items()}
            return float(data["at"]), statuses
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None
