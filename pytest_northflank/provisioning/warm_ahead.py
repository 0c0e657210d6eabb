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
import hmac
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from pytest_northflank.client.models import DeploymentServiceSpec, Service
from pytest_northflank.config.settings import (
    MarkerLayer,
    SandboxOptions,
    Settings,
    apply_overrides,
    layered_markers,
)
from pytest_northflank.errors import ConfigError, NorthflankError, ProvisioningError
from pytest_northflank.provisioning.depth import DepthPolicy, FixedDepth
from pytest_northflank.provisioning.readiness import Readiness, ReadinessBoard
from pytest_northflank.provisioning.shelf import Claim, Shelf, ShelfItem, owner_alive
from pytest_northflank.run.files import RunDirError, note_damage


class Maker(Protocol):
    """What warm-ahead needs from the provisioner (which satisfies it): names, specs, creates
    and deletes, and the readiness board that watches what it made."""

    board: ReadinessBoard
    settings: Settings

    def next_name(self, hint: str) -> str: ...

    def spec_for(
        self, options: SandboxOptions, hint: str, *, name: str | None = None
    ) -> DeploymentServiceSpec: ...

    def create(
        self,
        spec: DeploymentServiceSpec,
        *,
        shared: bool = False,
        on_refused: Callable[[], None] | None = None,
    ) -> Service: ...

    def discard(self, service_id: str, name: str, options: SandboxOptions) -> None: ...


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


# ---------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Demand:
    """A collected test that will ask for ``nf_sandbox``, with its ``nf_sandbox`` markers as
    ``(args, kwargs)``, closest first (already validated at collection)."""

    nodeid: str
    markers: tuple[MarkerLayer, ...] = ()


# The key of spec keys when the caller gives none: random, made once per process.
_PROCESS_KEY = secrets.token_bytes(32)


def spec_key(options: SandboxOptions, key: bytes = _PROCESS_KEY) -> str:
    """What makes two sandboxes interchangeable, as a short string: everything the service is
    created from (the ready timeout and the keep mode only matter to the test holding it).

    An HMAC under ``key``, a random secret of the run kept in memory (xdist workers get it
    through ``workerinput``): the shelf file holds these strings, and a plain hash of a spec
    whose env holds a weak password would let anyone who reads the file guess the password.
    """
    made_of = [
        options.image,
        options.plan,
        sorted(options.env.items()),
        list(options.tags),
        options.command,
    ]
    return hmac.new(key, json.dumps(made_of).encode(), hashlib.sha256).hexdigest()[:16]


def plan(demand: Sequence[Demand], settings: Settings) -> list[SandboxOptions]:
    """The options of each sandbox ``demand`` will ask for, in order."""
    base = settings.sandbox_options()
    expected = []
    for wanted in demand:
        overrides = layered_markers(wanted.markers, wanted.nodeid)
        expected.append(base if overrides is None else apply_overrides(base, overrides))
    return expected


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
        provisioner: Maker,
        expected: Sequence[SandboxOptions],
        shelf: Shelf,
        *,
        depth: int | DepthPolicy,
        owner: str,
        concurrency: int = MAX_CONCURRENT_CREATES,
        allowed: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
        key: bytes = _PROCESS_KEY,
    ) -> None:
        self.provisioner = provisioner
        self._key = key
        self.shelf = shelf
        self.policy = FixedDepth(depth) if isinstance(depth, int) else depth
        self.owner = owner
        self.concurrency = max(1, min(concurrency, self.policy.cap))
        # Asked before making more (False: the run's request quota is running low).
        self._allowed = allowed
        self._clock = clock
        self._demand = [spec_key(options, key) for options in expected]
        self._options = {spec_key(options, key): options for options in expected}
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
        first). Starts the next ones when it hands one over. A shelf that cannot be used any
        more (a full disk, a removed run directory) ends warm-ahead for this process."""
        try:
            return self._take(options)
        except (OSError, RunDirError) as error:
            self._give_up(error)
            return None

    def _give_up(self, error: Exception) -> None:
        with self._lock:
            self._closed = True
        note_damage(self.shelf.path, f"warm-ahead stopped: {error}")

    def _take(self, options: SandboxOptions) -> Handover | None:
        key = spec_key(options, self._key)
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
        key = spec_key(options, self._key)
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
            if not any(owner_alive(owner) for owner in claim.pending_elsewhere):
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
        try:
            with self._lock:
                if not self._closed:
                    self._refill()
        except (OSError, RunDirError) as error:
            self._give_up(error)

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
