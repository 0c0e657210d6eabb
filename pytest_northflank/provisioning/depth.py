"""How many sandboxes warm-ahead keeps in the making: a fixed number, or ``auto``, which measures
provisioning time and test time as the run goes and keeps about one provisioning time's worth of
tests covered."""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal, Protocol

# Auto depth: its ceiling per process (and where it starts: provisioning nearly always takes
# longer than a test, so until measured the suite should wait for it once, not once per
# batch of two), and how many recent measurements of each kind its medians look at.
AUTO_CAP = 8
AUTO_START = AUTO_CAP
AUTO_SAMPLES = 8


# --------------------------------------------------------------------------------- the depth


class DepthPolicy(Protocol):
    """How many sandboxes one process keeps provisioning ahead, told what the pool sees."""

    mode: Literal["auto", "fixed"]
    #: The most :meth:`depth` ever returns.
    cap: int

    def note_provisioning(self, seconds: float) -> None:
        """A sandbox became ready ``seconds`` after its create request was sent."""

    def note_given(self) -> None:
        """A test got its sandbox, ready, now."""

    def note_asked(self) -> None:
        """A test asks for its sandbox now."""

    def depth(self, *, remaining: int, may_grow: bool) -> int:
        """The depth to keep now; ``remaining``: planned tests still to ask after this one;
        ``may_grow`` False while the run's request budget says to spend no optional requests."""

    @property
    def reached(self) -> int:
        """The highest depth :meth:`depth` returned."""


class FixedDepth:
    """``--nf-warm-ahead N``: always ``N`` ahead."""

    mode: Literal["auto", "fixed"] = "fixed"

    def __init__(self, depth: int) -> None:
        self.cap = depth

    def note_provisioning(self, seconds: float) -> None:
        pass

    def note_given(self) -> None:
        pass

    def note_asked(self) -> None:
        pass

    def depth(self, *, remaining: int, may_grow: bool) -> int:
        return self.cap

    @property
    def reached(self) -> int:
        return self.cap


class AutoDepth:
    """``--nf-warm-ahead auto``: as many ahead as one provisioning time needs, as measured.

    A process whose tests take a sandbox every ``T`` seconds, while a sandbox takes ``P`` seconds
    from its create request until ready, needs about ``P / T`` of them in the making for no test
    to wait. So the depth is ``ceil(P / T)`` kept between 1 and ``cap``, where ``P`` and ``T`` are
    the medians of the last ``samples`` measurements (one slow deploy or one long test does not
    swing it):

    * ``P``: create request sent to seen ready, for every sandbox of the process;
    * ``T``: from a test getting its ready sandbox to the next test asking for one, that is the
      test's own time (body, teardown, the fixtures in between) without any wait for
      provisioning, so a pool that falls behind does not read as slow tests.

    Until both have been seen it is ``start`` (the cap: the first tests then wait for one
    provisioning time together, not in rounds). It is never more than the tests still to come,
    and while the run's request budget says to slow down it may shrink but not grow. ``clock``
    is injectable, so the policy is tested by feeding it times.
    """

    mode: Literal["auto", "fixed"] = "auto"

    def __init__(
        self,
        *,
        start: int = AUTO_START,
        cap: int = AUTO_CAP,
        samples: int = AUTO_SAMPLES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.start, self.cap = start, cap
        self._clock = clock
        self._provisioning: deque[float] = deque(maxlen=samples)
        self._test_times: deque[float] = deque(maxlen=samples)
        self._given_at: float | None = None
        self._current = min(start, cap)
        self._reached = 0
        self._lock = threading.Lock()

    def note_provisioning(self, seconds: float) -> None:
        with self._lock:
            self._provisioning.append(max(seconds, 0.0))

    def note_given(self) -> None:
        with self._lock:
            self._given_at = self._clock()

    def note_asked(self) -> None:
        with self._lock:
            if self._given_at is not None:
                self._test_times.append(max(self._clock() - self._given_at, 0.0))
            self._given_at = None

    def wanted(self) -> int:
        """``ceil(P / T)`` between 1 and the cap, or the start depth until both are known."""
        with self._lock:
            if not self._provisioning or not self._test_times:
                return min(self.start, self.cap)
            provisioning = statistics.median(self._provisioning)
            test_time = statistics.median(self._test_times)
        if test_time <= 0:
            return self.cap
        return max(1, min(math.ceil(provisioning / test_time), self.cap))

    def depth(self, *, remaining: int, may_grow: bool) -> int:
        wanted = self.wanted()
        with self._lock:
            self._current = wanted if may_grow else min(wanted, self._current)
            depth = max(min(self._current, remaining), 0)
            self._reached = max(self._reached, depth)
            return depth

    @property
    def reached(self) -> int:
        with self._lock:
            return self._reached


def depth_policy(warm_ahead: int | Literal["auto"]) -> DepthPolicy:
    """The policy for a ``warm_ahead`` setting: ``auto`` or a fixed number."""
    return AutoDepth() if warm_ahead == "auto" else FixedDepth(int(warm_ahead))
