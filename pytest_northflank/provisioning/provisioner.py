"""From sandbox options to a ready service and back: create, wait for readiness, delete.

(About 560 lines: one class whose steps share its lock, ledger and stats; the texts that explain
failures live in :mod:`.messages`, the clients in :mod:`.backend`, the breaker in
:mod:`.preflight`, releasing and keeping in :mod:`.keeping`.)

The three steps are separate methods of :class:`Provisioner` (``create``, ``wait_ready``,
``delete``) so that cleanup and warm-ahead provisioning can drive them on their own. API errors
that real accounts run into first (``northflank-api.md`` section 10) are turned here into
messages that say what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone

from pytest_northflank.client import NorthflankClient
from pytest_northflank.client.models import DeploymentServiceSpec, Service
from pytest_northflank.config.endpoints import dashboard_url
from pytest_northflank.config.settings import SandboxOptions, Settings
from pytest_northflank.errors import (
    ApiError,
    ConfigError,
    ConnectFailed,
    DeploymentFailed,
    NorthflankError,
    NotFoundError,
    ProvisioningError,
    ReadyTimeout,
    TransportError,
)
from pytest_northflank.probe import Probe
from pytest_northflank.provisioning.budget import SharedListing, SharedQuota
from pytest_northflank.provisioning.depth import depth_policy
from pytest_northflank.provisioning.keeping import Releasing
from pytest_northflank.provisioning.messages import (
    create_was_refused,
    explain_api_error,
    explain_create_error,
    not_ready_text,
    refusal_recurs,
)
from pytest_northflank.provisioning.preflight import Breaker, is_fatal, unreachable_text
from pytest_northflank.provisioning.readiness import ReadinessBoard
from pytest_northflank.provisioning.shelf import Shelf
from pytest_northflank.provisioning.tags import MissingTags
from pytest_northflank.provisioning.warm_ahead import Demand, Handover, WarmPool, plan
from pytest_northflank.redaction import mask, secret_values
from pytest_northflank.run.files import RunDirError
from pytest_northflank.run.identity import Run
from pytest_northflank.run.ledger import Ledger
from pytest_northflank.run.ownership import Ownership, delete_refusal, is_name_of_run
from pytest_northflank.run.stats import RunStats
from pytest_northflank.sandbox import Sandbox

# A wait longer than this shows a progress line, and again every as long.
PROGRESS_AFTER = 10.0
# Seconds one sandbox's delete may take, retries of connection failures and 5xx included;
# what is not deleted by then stays in the ledger for the end-of-session sweep and the reaper.
DELETE_WITHIN = 10.0


def _refuse_to_delete_shared(sandbox: Sandbox) -> None:
    raise ConfigError(
        f"sandbox {sandbox.name} is shared by the whole run; it is deleted when the run ends, "
        "not by one test"
    )


class Provisioner(Releasing):
    """Creates sandboxes, waits until they are ready, and deletes (or keeps) them."""

    def __init__(
        self,
        client: NorthflankClient,
        settings: Settings,
        stats: RunStats,
        *,
        owner: Ownership,
        project_id: str,
        progress: Callable[[str], None] | None = None,
        ledger: Ledger | None = None,
        ledger_owner: str | None = None,
        register: Callable[[Sandbox], None] | None = None,
        create_missing_tags: bool = False,
        quota: SharedQuota | None = None,
        shared_listing: SharedListing | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:

        self.client = client
        self.settings = settings
        self.stats = stats
        self.owner = owner
        self.project_id = project_id
        self.progress = progress
        #: Optional run ledger: each service is written down before its create request.
        self.ledger = ledger
        #: Who the ledger says made this provisioner's services (a worker process instance).
        self.ledger_owner = ledger_owner or f"{owner.worker_id}:{os.getpid()}"
        self._register = register
        # On the embedded emulator, tags named in the settings are made on first use, so a
        # suite configured for a real cluster (nf_tags = spot-workload) also runs offline.
        self._tags = MissingTags(client) if create_missing_tags else None
        #: The run's shared rate-limit figures: read before optional requests, fed after each.
        self.quota = quota
        #: Readiness of every sandbox this process waits for, polled for all of them at once.
        self.board = ReadinessBoard(
            client, project_id, quota=quota, shared_listing=shared_listing, clock=clock
        )
        #: Sandboxes made ahead of the nf_sandbox tests that will take them (None: off).
        self.pool: WarmPool | None = None
        self._clock = clock
        self._counter = 0
        self._lock = threading.Lock()
        #: Sandboxes this provisioner made and has not released yet.
        self.alive: list[Sandbox] = []
        #: Trips on a fatal answer (token refused, project gone, API unreachable): later
        #: creates fail at once without a request.
        self.breaker = Breaker()

    @classmethod
    def for_run(
        cls,
        run: Run,
        client: NorthflankClient,
        settings: Settings,
        *,
        demand: Sequence[Demand] = (),
        progress: Callable[[str], None] | None = None,
        register: Callable[[Sandbox], None] | None = None,
    ) -> Provisioner:
        """The provisioner of a pytest process: the run's ledger and shared rate-limit figures,
        and (unless ``--nf-warm-ahead`` is 0) a warm-ahead pool for ``demand``, the collected
        tests that take an ``nf_sandbox``."""
        workers = run.processes_sharing_tests
        provisioner = cls(
            client,
            settings,
            run.stats,
            owner=Ownership(run.run_id, run.worker_id),
            project_id=settings.project_in_use,
            progress=progress,
            ledger=run.ledger,
            ledger_owner=run.ledger_owner,
            register=register,
            create_missing_tags=settings.backend_in_use == "emulator",
            quota=SharedQuota(run.files.rate_limit, processes=workers),
            # xdist workers waiting at the same time share their listings.
            shared_listing=(
                None
                if run.is_controller
                else SharedListing(run.files.listing, settings.project_in_use)
            ),
        )
        if settings.warm_ahead != 0 and demand:
            # Workers dealt tests at run time share one shelf; otherwise each has its own.
            provisioner.pool = WarmPool(
                provisioner,
                plan(demand, settings),
                Shelf(
                    run.files.warm_ahead(None if workers > 1 else run.worker_id),
                    accept_name=lambda name: is_name_of_run(name, run.run_id),
                ),
                depth=depth_policy(settings.warm_ahead),
                owner=run.ledger_owner,
                allowed=lambda: not provisioner.quota_is_low(),
                key=run.secret,
            )
        return provisioner

    # ----------------------------------------------------------------------------- names

    def next_name(self, hint: str) -> str:
        """A unique service name carrying the run, the worker and a readable ``hint``."""
        with self._lock:
            self._counter += 1
            counter = self._counter
        return self.owner.service_name(counter, hint)

    def spec_for(
        self, options: SandboxOptions, hint: str, *, name: str | None = None
    ) -> DeploymentServiceSpec:

        now = datetime.now(timezone.utc)
        owner, expiry = self.owner, self.settings.expiry
        if expiry is not None:
            owner = dataclasses.replace(owner, deadline=now + timedelta(seconds=expiry))
        return DeploymentServiceSpec(
            name=name or self.next_name(hint),
            plan=options.plan,
            image=options.image,
            command=options.command or None,
            env=dict(options.env),
            tags=list(options.tags),
            ports=options.ports,
            description=owner.description(now),
            expiry_time=math.ceil(expiry) if expiry is not None else None,
            health_checks=(
                [options.ready.health_check(options.ready_timeout)] if options.ready else []
            ),
        )

    # ------------------------------------------------------------------------ the seams

    def create(
        self,
        spec: DeploymentServiceSpec,
        *,
        shared: bool = False,
        on_refused: Callable[[], None] | None = None,
    ) -> Service:
        """Send the create request; API errors become messages that say what to do.

        A create the API refused is written down as such in the ledger (nothing to delete).
        ``on_refused`` is called when the refusal would recur for any sandbox of the same spec
        (see :func:`refusal_recurs`), before the error is raised.
        """
        __tracebackhide__ = True  # users need the message, not our frames
        self.breaker.check()
        if self._tags is not None:
            self._tags.ensure(spec.tags)
        if self.ledger is not None:
            try:
                self.ledger.record_intent(
                    name=spec.name,
                    project_id=self.project_id,
                    worker_id=self.owner.worker_id,
                    owner=self.ledger_owner,
                    shared=shared,
                )
            except OSError as error:  # nothing is created that the ledger does not list
                raise ProvisioningError(
                    f"cannot write the run ledger {self.ledger.path} ({error.strerror}); "
                    f"sandbox {spec.name} was not created"
                ) from None
        try:
            service = self.client.create_deployment_service(self.project_id, spec)
        except ConnectFailed as error:
            # Never sent: no service was made, so no cleanup path needs to look for one.
            if self.ledger is not None:
                self.ledger.record_refused(spec.name, "never sent: no connection to the API")
            message = unreachable_text(self.settings, error)
            self.breaker.trip(message)
            raise ProvisioningError(message) from None
        except ApiError as error:
            if self.ledger is not None and create_was_refused(error):
                reason = mask(f"{error.status} {error.api_message}", secret_values(spec.env))
                self.ledger.record_refused(spec.name, reason)
            if on_refused is not None and refusal_recurs(error):
                on_refused()
            message = explain_create_error(self.client, self.settings, self.project_id, error, spec)
            if is_fatal(error):
                self.breaker.trip(message)
            raise ProvisioningError(message) from None
        finally:
            self._publish_quota()
        if self.ledger is not None:
            self.ledger.record_created(spec.name, service.id)
        with self._lock:  # the warm-ahead pool creates from its own threads
            self.stats.created += 1
        return service

    def wait_ready(
        self,
        service: Service,
        *,
        timeout: float,
        created_at: float | None = None,
        gone_ok: bool = False,
    ) -> Service | None:
        """Wait until the deployment is COMPLETED; FAILED or the timeout raise with details.

        ``timeout`` counts from ``created_at`` (a ``clock`` reading; default: now). The polling
        is shared with every other sandbox this process waits for (:attr:`board`). With
        ``gone_ok``, a service found deleted returns None instead of raising.
        """
        __tracebackhide__ = True  # users need the message, not our frames
        started = self._clock() if created_at is None else created_at
        deadline = started + timeout
        next_progress = self._clock() + PROGRESS_AFTER
        self.board.watch(
            service.id,
            service.name,
            status=service.deployment_status,
            reason=service.deployment_reason,
            created_at=started,
            deadline=deadline,
        )
        try:
            while True:
                seen = self.board.wait(service.id, until=min(deadline, next_progress))
                service = service.model_copy(
                    update={"deployment_status": seen.status, "deployment_reason": seen.reason}
                )
                if gone_ok and isinstance(seen.error, NotFoundError):
                    return None
                if seen.error is not None:
                    raise ProvisioningError(
                        f"while waiting for sandbox {service.name}: "
                        + self._explain_poll_error(seen.error, service.id)
                    ) from None
                if seen.status == "COMPLETED":
                    return service
                if seen.status == "FAILED":
                    raise DeploymentFailed(
                        not_ready_text(
                            self.client, self.project_id, service, "its deployment FAILED"
                        )
                    )
                now = self._clock()
                if now >= deadline:
                    raise ReadyTimeout(
                        not_ready_text(
                            self.client,
                            self.project_id,
                            service,
                            f"it was not ready within {timeout:g} s",
                        )
                        + "\nA slow cluster needs a longer wait: --nf-ready-timeout, ini "
                        "nf_ready_timeout, or @pytest.mark.nf_sandbox(ready_timeout=...)."
                    )
                if self.progress is not None and now >= next_progress:
                    status = seen.status or "no status yet"
                    self.progress(
                        f"waiting for sandbox {service.name}: {status} after {now - started:.0f} s "
                        f"(ready timeout {timeout:g} s)"
                    )
                    next_progress += PROGRESS_AFTER
        finally:
            self.board.forget(service.id)

    def _explain_poll_error(self, error: NorthflankError, service_id: str) -> str:
        if isinstance(error, ApiError):
            return explain_api_error(self.settings, error, "read", f"reading service {service_id}")
        return f"reading service {service_id} failed: {error}"

    def quota_is_low(self) -> bool:
        """True when the run's shared rate-limit figures say to spend no optional requests."""
        return self.quota is not None and self.quota.is_low()

    def _publish_quota(self) -> None:
        if self.quota is not None:
            self.quota.publish(self.client.rate_limit)

    def delete(self, sandbox: Sandbox, *, by: str = "pytest-northflank") -> bool:
        """Delete the sandbox's service; False when it was already gone. ``by`` is named in
        the error of any later call on it."""
        __tracebackhide__ = True  # users need the message, not our frames
        if sandbox.deleted:
            return False
        sandbox.stop_processes()  # bounded: a stuck process is cut off, never waited for
        self.client.stop_forwarding(self.project_id, sandbox.id)
        try:
            existed = self.client.delete_service(self.project_id, sandbox.id, within=DELETE_WITHIN)
        except TransportError as error:
            raise ProvisioningError(
                f"could not delete sandbox {sandbox.name} (service {sandbox.id}) within "
                f"{DELETE_WITHIN:g} s: {error}\nThe end-of-session sweep and the reaper try "
                f"again; or delete it by hand: {sandbox.dashboard_url}"
            ) from None
        except ApiError as error:
            self._publish_quota()
            raise ProvisioningError(
                f"could not delete sandbox {sandbox.name} (service {sandbox.id} in project "
                f"{self.project_id}): "
                + explain_api_error(
                    self.settings, error, "delete", f"deleting service {sandbox.id}"
                )
                + f"\nDelete it by hand: {sandbox.dashboard_url}"
            ) from None
        self._publish_quota()
        sandbox.mark_deleted(by)
        with self._lock:
            if sandbox in self.alive:
                self.alive.remove(sandbox)
            self.stats.deleted += 1
        if self.ledger is not None:
            # Best effort: a ledger that still lists it costs the end-of-run sweep one read.
            with contextlib.suppress(OSError, RunDirError):
                self.ledger.record_deleted(sandbox.name, found=existed)
        return existed

    # ---------------------------------------------------------------------- whole steps

    def provision(
        self,
        options: SandboxOptions,
        *,
        hint: str,
        current_test: Callable[[], str | None] = lambda: None,
        shared: bool = False,
        planned: bool = False,
    ) -> Sandbox:
        """Create a sandbox and wait until it is ready; a sandbox that fails is not left behind.

        A ``shared`` sandbox (one for the whole run) is not this provisioner's to release: the
        run's controller deletes it at the end of the session. A ``planned`` one (an
        ``nf_sandbox`` test's, foreseen at collection) comes from the warm-ahead pool when the
        pool made one like it ahead.
        """
        __tracebackhide__ = True  # users need the message, not our frames
        started = self._clock()
        handed = self.pool.take(options) if planned and self.pool is not None else None
        sandbox = self._take_ready(handed, options, current_test) if handed is not None else None
        if sandbox is None:
            pool = self.pool
            try:
                spec = self.spec_for(options, hint)
                sent = self._clock()
                service = self.create(
                    spec,
                    shared=shared,
                    # Warm-ahead makes no more of a spec the API refuses (the tests asking
                    # for one still send their own create, and get the API's answer).
                    on_refused=None if pool is None else lambda: pool.note_refused(options),
                )
            except ConfigError:
                if pool is not None:
                    pool.note_refused(options)
                raise
            finally:
                if planned and self.pool is not None:
                    self.pool.refill()  # after this test's own create: it goes first
            name = service.name or spec.name
            sandbox = self._handle(service.id, name, options, current_test, shared=shared)
            try:
                self.wait_ready(service, timeout=options.ready_timeout, created_at=started)
            except ProvisioningError as error:
                self.stats.failed += 1
                raise type(error)(f"{error}{self._after_failure(sandbox)}") from None
            if self.pool is not None:
                self.pool.note_ready(service.id, sent)
        if options.ready is not None:
            self._await_probe(
                sandbox, options.ready, options.ready_timeout - (self._clock() - started)
            )
        # What the test waited for its sandbox (less than the provisioning time when made ahead).
        sandbox.provisioning_seconds = self._clock() - started
        self.stats.provisioning_seconds.append(sandbox.provisioning_seconds)
        if not shared:
            with self._lock:
                self.alive.append(sandbox)
        if self._register is not None:
            self._register(sandbox)
        if planned and self.pool is not None:
            self.pool.note_given()  # the test's own time starts (auto warm-ahead measures it)
        return sandbox

    def _await_probe(self, sandbox: Sandbox, ready: Probe, remaining: float) -> None:
        """The deployment is COMPLETED; hand the sandbox out only once ``ready`` passes too
        (Northflank's own readiness probe runs at most every 10 s, ours every 0.1 s)."""
        __tracebackhide__ = True  # users need the message, not our frames
        try:
            sandbox.wait_until(ready, timeout=max(remaining, 0.0))
        except NorthflankError as error:  # WaitTimeout, or the probe's exec failing
            self.stats.failed += 1
            service = Service.model_validate({"id": sandbox.id, "name": sandbox.name, "status": {}})
            text = not_ready_text(
                self.client,
                self.project_id,
                service,
                f"its readiness probe {ready} failed: {error}",
            )
            raise ReadyTimeout(f"{text}{self._after_failure(sandbox)}") from None

    def _handle(
        self,
        service_id: str,
        name: str,
        options: SandboxOptions,
        current_test: Callable[[], str | None] = lambda: None,
        *,
        shared: bool = False,
    ) -> Sandbox:
        return Sandbox(
            self.client,
            project_id=self.project_id,
            service_id=service_id,
            name=name,
            options=options,
            dashboard_url=dashboard_url(
                self.settings, self.client.base_url, self.project_id, service_id
            ),
            current_test=current_test,
            deleter=_refuse_to_delete_shared if shared else self.delete,
            default_timeout=self.settings.command_timeout or None,
        )

    def _take_ready(
        self,
        handed: Handover,
        options: SandboxOptions,
        current_test: Callable[[], str | None],
    ) -> Sandbox | None:
        """Make a sandbox made ahead this process's (in the ledger too) and wait until it is
        ready; None if it was deleted meanwhile (its maker crashed and was cleaned up after)."""
        __tracebackhide__ = True  # users need the message, not our frames

        if handed.maker != self.ledger_owner and self.ledger is not None:
            self.ledger.record_handover(
                handed.name, worker_id=self.owner.worker_id, owner=self.ledger_owner
            )
        with self._lock:
            self.stats.made_ahead_used += 1
        status = {"deployment": {"status": "COMPLETED"}} if handed.ready else {}
        service = Service.model_validate(
            {"id": handed.service_id, "name": handed.name, "status": status}
        )
        sandbox = self._handle(service.id, handed.name, options, current_test)
        try:
            ready = self.wait_ready(
                service,
                timeout=options.ready_timeout,
                created_at=handed.created_at,
                gone_ok=True,
            )
        except ProvisioningError as error:
            self.stats.failed += 1
            raise type(error)(f"{error}{self._after_failure(sandbox)}") from None
        if ready is None:
            if self.ledger is not None:
                self.ledger.record_deleted(handed.name, found=False)
            return None
        if not handed.ready and self.pool is not None:
            self.pool.note_ready(handed.service_id, handed.created_at)
        return sandbox

    def discard(self, service_id: str, name: str, options: SandboxOptions) -> None:
        """Delete a sandbox made ahead that no test took, once a fresh read shows it is this
        run's (the shelf file it came from is only a file)."""
        __tracebackhide__ = True  # users need the message, not our frames
        try:
            service = self.client.get_service(self.project_id, service_id)
        except NotFoundError:
            if self.ledger is not None:
                self.ledger.record_deleted(name, found=False)
            return
        refusal = delete_refusal(self.owner.run_id, name, service.name, service.description)
        if refusal is not None:
            with self._lock:
                self.stats.cleanup_notes.append(f"not deleting shelved {service_id}: {refusal}")
            return
        self.delete(self._handle(service_id, name, options))
        with self._lock:
            self.stats.made_ahead_unused += 1

    def attach(self, service_id: str, name: str, options: SandboxOptions) -> Sandbox:
        """A handle on a ready sandbox another process of the run made (the shared one)."""
        sandbox = self._handle(service_id, name, options, shared=True)
        if self._register is not None:
            self._register(sandbox)
        return sandbox
