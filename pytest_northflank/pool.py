"""Warm-ahead: sandboxes provisioned before the tests that will use them ask for them.

After collection each pytest process knows which of its tests take an ``nf_sandbox``, what
each of those sandboxes is made of (the settings plus the test's marker) and in what order they
come. From the first such test on, :class:`WarmPool` keeps up to ``depth`` of the next ones
being provisioned in the background (a few create requests at a time), so they become ready
while earlier tests run: a suite of function-scoped sandbox tests waits for provisioning about
once instead of once per test.

What is made ahead is put on a :class:`Shelf`, a small JSON file in the run directory. Under
xdist with a mode that deals tests out while the run goes (``load``, ``loadscope``, ...), a
worker cannot know which tests it will get, so the workers share one shelf: a test takes a
matching sandbox whichever worker made it (the ledger then names the new owner), and the
shelf's tally of the run (tests that asked, creates in flight, sandboxes waiting) keeps the run
from making more than its tests need, while each worker keeps at most ``depth`` of its own
ahead. With ``--dist each`` or without xdist each process has a shelf of its own.

How many ahead (the depth) is a :class:`FixedDepth` (``--nf-warm-ahead N``) or an
:class:`AutoDepth` (``--nf-warm-ahead auto``, the default), which measures provisioning time and
test time as the run goes and keeps about one provisioning time's worth of tests covered.

Sandboxes made ahead are ordinary services of the run: written to the run ledger before their
create request (by :meth:`Provisioner.create <pytest_northflank.provisioning.Provisioner.create>`)
and deleted at the end of the session if no test took them. A spec the API refuses in a way that
would recur (a plan that does not exist, a missing permission or project: see
:func:`~pytest_northflank.provisioning.refusal_recurs`), whether the refused create was made
ahead or by a test, is made ahead no more; its tests send their own create and get the API's
answer. A transient failure (5xx, transport, 429) stops nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from filelock import FileLock

from pytest_northflank.errors import ConfigError, NorthflankError, ProvisioningError
from pytest_northflank.run_files import replace_json

if TYPE_CHECKING:
    import pytest

    from pytest_northflank.client.models import Service
    from pytest_northflank.provisioning import Provisioner
    from pytest_northflank.readiness import Readiness
    from pytest_northflank.settings import SandboxOptions, Settings

# Create requests in flight at once per process: creating is quick (the API answers long
# before the deployment is ready), so a few threads keep any depth fed.
MAX_CONCURRENT_CREATES = 4
# The service name hint of a sandbox made ahead (it is not tied to one test).
AHEAD_HINT = "ahead"
# xdist distribution modes where every worker runs every collected test.
EVERY_TEST_HERE = ("no", "each")
# How often a test waiting for another worker's create looks at the shelf (it is a local file).
SHELF_POLL = 0.02
MAX_SHELF_POLL = 0.5


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


# ---------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Demand:
    """A collected test that will ask for ``nf_sandbox``, with its ``nf_sandbox`` marker's
    keywords (already validated at collection), or None without a marker."""

    nodeid: str
    marker_kwargs: Mapping[str, Any] | None


def demand_of(items: Iterable[pytest.Item]) -> list[Demand]:
    """The tests among ``items`` that will run (not skipped outright), in run order."""
    demand = []
    for item in items:
        if _always_skipped(item):
            continue
        marker = item.get_closest_marker("nf_sandbox")
        demand.append(Demand(item.nodeid, dict(marker.kwargs) if marker is not None else None))
    return demand


def _always_skipped(item: pytest.Item) -> bool:
    if item.get_closest_marker("skip") is not None:
        return True
    return any(
        mark.args and all(arg is True for arg in mark.args) for mark in item.iter_markers("skipif")
    )


def spec_key(options: SandboxOptions) -> str:
    """What makes two sandboxes interchangeable, as a short string: everything the service is
    created from (the ready timeout and the keep mode only matter to the test holding it)."""
    made_of = [
        options.image,
        options.plan,
        sorted(options.env.items()),
        list(options.tags),
        options.command,
    ]
    return hashlib.sha256(json.dumps(made_of).encode()).hexdigest()[:16]


def plan(demand: Sequence[Demand], settings: Settings) -> list[SandboxOptions]:
    """The options of each sandbox ``demand`` will ask for, in order."""
    from pytest_northflank.settings import apply_overrides, validate_marker

    base = settings.sandbox_options()
    expected = []
    for wanted in demand:
        options = base
        if wanted.marker_kwargs is not None:
            overrides = validate_marker((), wanted.marker_kwargs, wanted.nodeid)
            options = apply_overrides(base, overrides)
        expected.append(options)
    return expected


def workers_sharing_tests(config: pytest.Config) -> int:
    """1 when this process runs every collected test (no xdist, ``--dist each``); otherwise the
    number of xdist workers the tests are dealt out to."""
    from pytest_northflank.xdist import WORKER_INPUT_DIST

    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is None or workerinput.get(WORKER_INPUT_DIST, "load") in EVERY_TEST_HERE:
        return 1
    return max(int(workerinput.get("workercount", 1)), 1)


# --------------------------------------------------------------------------------- the shelf


@dataclass(frozen=True)
class ShelfItem:
    """A sandbox made ahead and not taken yet; ``made_at`` is epoch seconds."""

    key: str
    name: str
    service_id: str
    owner: str
    made_at: float
    ready: bool


@dataclass(frozen=True)
class Claim:
    """What a test got from the shelf: a sandbox made ahead, or the name of one this process
    is still creating (``promised``), or neither; ``pending_elsewhere`` lists the processes
    (owners) still creating one of that spec."""

    item: ShelfItem | None = None
    promised: str | None = None
    pending_elsewhere: tuple[str, ...] = ()


class Shelf:
    """Warm-ahead's record, in one JSON file under a file lock (see the module docstring).

    ``asked``: per spec key, the planned tests that asked for a sandbox; ``making``: creates in
    flight (key, name, owner); ``shelf``: sandboxes made ahead, waiting for a test; ``open``:
    the processes using the shelf; ``refused``: spec keys the API refuses, made ahead by none.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = FileLock(str(path) + ".lock")

    @contextmanager
    def _edit(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            data.setdefault("asked", {})
            data.setdefault("making", [])
            data.setdefault("shelf", [])
            data.setdefault("open", [])
            data.setdefault("refused", [])
            yield data
            replace_json(self.path, data)

    def claim(self, key: str, *, owner: str, count: bool = True) -> Claim:
        """A planned test asks for a sandbox of spec ``key``: count it (unless this is a retry),
        and hand it the best matching sandbox on the shelf (ready first, then this process's
        own, then the oldest)."""
        with self._edit() as data:
            if count:
                data["asked"][key] = data["asked"].get(key, 0) + 1
            matching = [entry for entry in data["shelf"] if entry["key"] == key]
            if matching:
                best = min(
                    matching,
                    key=lambda e: (not e["ready"], e["owner"] != owner, e["made_at"]),
                )
                data["shelf"].remove(best)
                return Claim(item=ShelfItem(**best))
            mine = next(
                (e for e in data["making"] if e["key"] == key and e["owner"] == owner), None
            )
            if mine is not None:
                data["making"].remove(mine)
                return Claim(promised=mine["name"])
            others = tuple(e["owner"] for e in data["making"] if e["key"] == key)
            return Claim(pending_elsewhere=others)

    def reserve(
        self,
        demand: Sequence[str],
        *,
        owner: str,
        depth: int,
        skip: set[str],
        name_for: Callable[[str], str],
    ) -> list[tuple[str, str]]:
        """Choose the next sandboxes for this process to make ahead: the first tests of
        ``demand`` (spec keys in run order) not yet covered by a test that asked, a create in
        flight or the shelf, while this process has fewer than ``depth`` ahead, leaving out
        the specs in ``skip`` and those marked refused. Returns (key, name) pairs, now counted
        as in flight."""
        with self._edit() as data:
            skip = skip | set(data["refused"])
            covered: Counter[str] = Counter(data["asked"])
            covered.update(entry["key"] for entry in data["making"])
            covered.update(entry["key"] for entry in data["shelf"])
            own = sum(e["owner"] == owner for e in [*data["making"], *data["shelf"]])
            room = depth - own
            chosen: list[tuple[str, str]] = []
            for key in demand:
                if room <= 0:
                    break
                if covered[key] > 0:
                    covered[key] -= 1
                    continue
                if key in skip:
                    continue
                name = name_for(key)
                data["making"].append({"key": key, "name": name, "owner": owner})
                chosen.append((key, name))
                room -= 1
            return chosen

    def shelve(self, item: ShelfItem) -> bool:
        """Put a finished create on the shelf; False when a test of its maker was promised it."""
        with self._edit() as data:
            making = next((e for e in data["making"] if e["name"] == item.name), None)
            if making is None:
                return False
            data["making"].remove(making)
            data["shelf"].append(item.__dict__.copy())
            return True

    def mark_refused(self, key: str) -> None:
        """The API refuses sandboxes of spec ``key``: no process makes more of them ahead."""
        with self._edit() as data:
            if key not in data["refused"]:
                data["refused"].append(key)

    def abandon(self, name: str) -> None:
        """A create in flight that will not reach the shelf (it failed, or the run ends)."""
        with self._edit() as data:
            data["making"] = [e for e in data["making"] if e["name"] != name]

    def mark_ready(self, name: str) -> None:
        with self._edit() as data:
            for entry in data["shelf"]:
                if entry["name"] == name:
                    entry["ready"] = True

    def join(self, owner: str) -> None:
        """A process starts using the shelf."""
        with self._edit() as data:
            if owner not in data["open"]:
                data["open"].append(owner)

    def leave(self, owner: str, demand: Counter[str]) -> list[ShelfItem]:
        """A process ends its session: the sandboxes to delete now. Its own ones stay on the
        shelf while other processes still run tests that may take them (``demand``: every
        planned test's spec key, run-wide); the last process to leave takes everything left."""
        with self._edit() as data:
            data["open"] = [o for o in data["open"] if o != owner and _alive(o)]
            data["making"] = [entry for entry in data["making"] if entry["owner"] != owner]
            if not data["open"]:
                left, data["shelf"] = data["shelf"], []
                return [ShelfItem(**entry) for entry in left]
            # Tests still to ask, less what the other processes are making or hold for them.
            still: Counter[str] = Counter(
                {key: count - data["asked"].get(key, 0) for key, count in demand.items()}
            )
            still.subtract(entry["key"] for entry in data["making"])
            still.subtract(entry["key"] for entry in data["shelf"] if entry["owner"] != owner)
            surplus = []
            for entry in [e for e in data["shelf"] if e["owner"] == owner]:
                if still[entry["key"]] > 0:
                    still[entry["key"]] -= 1
                else:
                    surplus.append(entry)
                    data["shelf"].remove(entry)
            return [ShelfItem(**entry) for entry in surplus]


def _alive(owner: str) -> bool:
    """Whether the process behind a ledger owner (``<worker>:<pid>``) still runs."""
    from pytest_northflank.reaper import pid_alive

    _, _, pid = owner.rpartition(":")
    return pid_alive(int(pid)) if pid.isdigit() else True


# ---------------------------------------------------------------------------------- the pool


@dataclass(frozen=True)
class Handover:
    """A sandbox made ahead, given to a test: its service, and when its create request was sent
    (a ``clock`` time: the ready timeout counts from then). ``ready`` when a poll saw it so."""

    service_id: str
    name: str
    created_at: float
    ready: bool
    maker: str


@dataclass
class _Making:
    key: str
    name: str
    options: SandboxOptions
    future: Future[Service] | None = None
    created_at: float = 0.0
    made_at: float = 0.0
    promised: bool = False


class WarmPool:
    """Keeps up to ``depth`` sandboxes of the ``expected`` ones provisioning ahead of need.

    ``depth`` is a number or a :class:`DepthPolicy` (:class:`AutoDepth` adapts it to what the
    pool sees). The provisioner asks :meth:`take` for each sandbox an ``nf_sandbox`` test
    needs; the pool hands over a matching one made ahead (or None: the provisioner makes it
    then) and starts the next ones. The provisioner tells it when a test got its sandbox
    (:meth:`note_given`) and when one of this process's sandboxes was seen ready
    (:meth:`note_ready`). :meth:`close` deletes this process's sandboxes no test took.
    """

    def __init__(
        self,
        provisioner: Provisioner,
        expected: Sequence[SandboxOptions],
        shelf: Shelf,
        *,
        depth: int | DepthPolicy,
        owner: str,
        concurrency: int = MAX_CONCURRENT_CREATES,
        allowed: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provisioner = provisioner
        self.shelf = shelf
        self.policy = FixedDepth(depth) if isinstance(depth, int) else depth
        self.owner = owner
        self.concurrency = max(1, min(concurrency, self.policy.cap))
        # Asked before making more (False: the run's request quota is running low).
        self._allowed = allowed
        self._clock = clock
        self._demand = [spec_key(options) for options in expected]
        self._options = {spec_key(options): options for options in expected}
        self._making: dict[str, _Making] = {}
        # Specs the API refuses (a create of one, ahead or a test's own, met an error that
        # would recur): none is made ahead any more; their tests make their own, and see why.
        self._broken: set[str] = set()
        # Planned tests of this process that asked so far.
        self._asked = 0
        # Services whose provisioning time the policy has heard of (the pool and a test
        # waiting for the same sandbox may both see it ready).
        self._timed: set[str] = set()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        #: Sandboxes this process made ahead (created), and those it deleted unused.
        self.made = 0
        self.unused = 0
        shelf.join(owner)

    def take(self, options: SandboxOptions) -> Handover | None:
        """A sandbox made ahead with these options' spec, or None (then the caller makes its
        own, and calls :meth:`refill` once its create request is sent, so that request goes
        first). Starts the next ones when it hands one over."""
        key = spec_key(options)
        self.policy.note_asked()
        with self._lock:
            if self._closed:
                return None
            self._asked += 1
            claim = self.shelf.claim(key, owner=self.owner)
            own = self._promised(claim)
            if claim.item is not None or own is not None:
                self._refill()
        if claim.pending_elsewhere:
            # Another worker is creating one for this test: wait for it rather than make one
            # more (its create request takes a moment; its readiness is the same wait).
            claim, own = self._await_elsewhere(key, claim, options.ready_timeout)
            self.refill()
        if claim.item is not None:
            item = claim.item
            age = max(time.time() - item.made_at, 0.0)
            return Handover(item.service_id, item.name, self._clock() - age, item.ready, item.owner)
        if own is None or own.future is None:
            return None
        try:
            service = own.future.result()
        except NorthflankError:
            return None  # the create failed ahead: the test makes its own, and sees why
        return Handover(service.id, own.name, own.created_at, False, self.owner)

    def note_refused(self, options: SandboxOptions) -> None:
        """A create of a sandbox with these options was refused for good (a bad plan, a
        missing permission or project, an invalid spec): make no more of its spec ahead."""
        key = spec_key(options)
        with self._lock:
            if key in self._broken:
                return
            self._broken.add(key)
        self.shelf.mark_refused(key)

    def _promised(self, claim: Claim) -> _Making | None:
        """This process's create in flight that ``claim`` promised to a test (holding the lock)."""
        own = self._making.pop(claim.promised, None) if claim.promised else None
        if own is not None:
            own.promised = True
        return own

    def _await_elsewhere(
        self, key: str, claim: Claim, timeout: float
    ) -> tuple[Claim, _Making | None]:
        deadline = self._clock() + timeout
        pause = SHELF_POLL
        own = None
        while claim.pending_elsewhere and self._clock() < deadline:
            if not any(_alive(owner) for owner in claim.pending_elsewhere):
                break  # they died mid-create: their run's cleanup deletes what they made
            time.sleep(pause)
            pause = min(pause * 2, MAX_SHELF_POLL)
            with self._lock:
                claim = self.shelf.claim(key, owner=self.owner, count=False)
                own = self._promised(claim)
        return claim, own

    def note_given(self) -> None:
        """A planned test got its sandbox, ready: its own time starts now."""
        self.policy.note_given()

    def note_ready(self, service_id: str, created_at: float) -> None:
        """One of this process's sandboxes, created at ``created_at`` (a ``clock`` time), was
        seen ready now."""
        with self._lock:
            if service_id in self._timed:
                return
            self._timed.add(service_id)
        self.policy.note_provisioning(self._clock() - created_at)

    @property
    def depth_reached(self) -> int:
        """The highest depth the policy chose so far (a fixed depth: that depth)."""
        return self.policy.reached

    def refill(self) -> None:
        """Start sandboxes for the next tests nobody covers yet."""
        with self._lock:
            if not self._closed:
                self._refill()

    def _refill(self) -> None:
        """Start sandboxes for the next tests nobody covers yet (holding the lock)."""
        if not self._demand:
            return
        allowed = self._allowed()
        # Tests still to ask: this process's (dealt out by xdist, the run's; either way the
        # shelf never makes more than the run's tests need).
        depth = self.policy.depth(
            remaining=max(len(self._demand) - self._asked, 0), may_grow=allowed
        )
        if not allowed or depth <= 0:
            return
        chosen = self.shelf.reserve(
            self._demand,
            owner=self.owner,
            depth=depth,
            skip=self._broken,
            name_for=lambda key: self.provisioner.next_name(AHEAD_HINT),
        )
        for key, name in chosen:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.concurrency, thread_name_prefix="northflank-warm-ahead"
                )
            making = _Making(key, name, self._options[key])
            self._making[name] = making
            making.future = self._executor.submit(self._make, making)

    def _make(self, making: _Making) -> Service:
        making.created_at, making.made_at = self._clock(), time.time()
        try:
            with self._lock:
                refused = making.key in self._broken
            if refused:
                # Refused since this create was chosen (by another create of its spec in
                # flight at the same time): sending it would only meet the same refusal.
                raise ProvisioningError(f"{making.name} not created: the API refuses its spec")
            spec = self.provisioner.spec_for(making.options, AHEAD_HINT, name=making.name)
            service = self.provisioner.create(
                spec, on_refused=lambda: self.note_refused(making.options)
            )
        except NorthflankError as error:
            # A transient failure (5xx, transport, 429) leaves the spec to be tried again.
            if isinstance(error, ConfigError):
                self.note_refused(making.options)
            with self._lock:
                self._making.pop(making.name, None)
            self.shelf.abandon(making.name)
            raise
        ready = service.deployment_status == "COMPLETED"
        if ready:
            self.note_ready(service.id, making.created_at)
        with self._lock:
            self.made += 1
            if making.promised:
                return service  # a test of this process waits for it
            shelved = not self._closed and self.shelf.shelve(
                ShelfItem(making.key, making.name, service.id, self.owner, making.made_at, ready)
            )
            self._making.pop(making.name, None)
        if not shelved:
            self._discard(service.id, making.name, making.options)
        elif not ready:
            self.provisioner.board.watch(
                service.id,
                making.name,
                status=service.deployment_status,
                reason=service.deployment_reason,
                created_at=making.created_at,
                deadline=making.created_at + making.options.ready_timeout,
                on_settled=lambda seen: self._settled(making.name, making.created_at, seen),
            )
        return service

    def _settled(self, name: str, created_at: float, seen: Readiness) -> None:
        if seen.status == "COMPLETED":
            self.note_ready(seen.service_id, created_at)
            self.shelf.mark_ready(name)

    def _discard(self, service_id: str, name: str, options: SandboxOptions) -> None:
        self.provisioner.board.forget(service_id)
        self.provisioner.discard(service_id, name, options)
        with self._lock:
            self.unused += 1

    def close(self) -> None:
        """Stop making sandboxes ahead and delete those no test took (and none will: what other
        workers' tests may still take stays on the shelf until the last worker closes)."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            # Creates already sent finish (and are deleted below or by _make); others never start.
            executor.shutdown(wait=True, cancel_futures=True)
        problems = []
        for item in self.shelf.leave(self.owner, Counter(self._demand)):
            try:
                options = self._options.get(item.key, self.provisioner.settings.sandbox_options())
                self._discard(item.service_id, item.name, options)
            except NorthflankError as error:
                problems.append(str(error))
        if problems:
            raise ProvisioningError("\n".join(problems))
