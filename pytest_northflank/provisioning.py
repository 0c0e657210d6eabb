"""From sandbox options to a ready service and back: create, wait for readiness, delete.

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
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pytest_northflank.errors import (
    ApiError,
    ApiValidationError,
    AuthenticationError,
    ConfigError,
    DeploymentFailed,
    NorthflankError,
    NotFoundError,
    PermissionDeniedError,
    ProvisioningError,
    RateLimitedError,
    ReadyTimeout,
)
from pytest_northflank.ownership import Ownership
from pytest_northflank.sandbox import Sandbox, chronological, mask, secret_values

if TYPE_CHECKING:
    import pytest

    from pytest_northflank.budget import SharedListing, SharedQuota
    from pytest_northflank.client import NorthflankClient
    from pytest_northflank.client.models import DeploymentServiceSpec, Service
    from pytest_northflank.ledger import Ledger
    from pytest_northflank.plugin import PluginState
    from pytest_northflank.pool import Handover, WarmPool
    from pytest_northflank.reporting import RunStats
    from pytest_northflank.settings import SandboxOptions, Settings

DASHBOARD = "https://app.northflank.com"
# The API host the dashboard belongs to (any other URL is an emulator or a proxy).
NORTHFLANK_API_HOST = "api.northflank.com"
USER_AGENT = "pytest-northflank"

# A wait longer than this shows a progress line, and again every as long.
PROGRESS_AFTER = 10.0
LOG_LINES_IN_ERRORS = 20

# The API role permission each call needs (names from the official Python client).
PERMISSIONS = {
    "create": "Project > Services > General > Create",
    "read": "Project > Services > General > Read",
    "delete": "Project > Services > General > Delete",
    "projects": "Project > Projects > Manage > Read",
    "tags": "Account > Platform > Tags > Read",
}


# Refusals of a create that mean the API made nothing, and that the same spec would meet again:
# a body it rejects (a plan that does not exist, the spot-only rule: 400/422), a token it
# rejects or that lacks a permission, a project that does not exist.
RECURRING_REFUSALS = (ApiValidationError, AuthenticationError, PermissionDeniedError, NotFoundError)


def create_was_refused(error: ApiError) -> bool:
    """Whether the API answered a create with an error that means no service was made: a
    recurring refusal, or 429 (the quota was spent before the request was looked at). A 409 is
    not one (a service of that name exists), nor a 5xx (the create may have happened)."""
    return isinstance(error, (*RECURRING_REFUSALS, RateLimitedError))


def refusal_recurs(error: NorthflankError) -> bool:
    """Whether a failed create would fail the same way for every sandbox of the same spec (not
    a transient failure: 5xx, transport, 429). ``ConfigError``: the spec itself is invalid."""
    return isinstance(error, (ConfigError, *RECURRING_REFUSALS))


def _user_agent() -> str:
    from pytest_northflank import __version__

    return f"{USER_AGENT}/{__version__}"


def embedded_emulator_endpoint(state: PluginState, settings: Settings) -> tuple[str, str]:
    """URL and token of the embedded emulator, started on first use.

    Without xdist it runs on a thread of this process and stops at session end. Under xdist all
    workers share one emulator process (see :mod:`pytest_northflank.shared_emulator`), so a
    run-wide sandbox and the controller's crash cleanup see the same API.
    """
    if state.emulator_endpoint is None:
        from pytest_northflank import shared_emulator

        shared = shared_emulator.find(state.run_dir) if state.is_controller else None
        if state.is_controller and shared is None:
            from pytest_northflank.emulator import EmulatorServer

            server = EmulatorServer(
                isolation=settings.emulator_isolation,
                ready_delay=settings.emulator_ready_delay,
                project_ids=(settings.project_in_use,),
            )
            server.start()
            state.emulator = server
            url, token = server.url, server.token
            isolation, reason = str(server.isolation), server.isolation_reason
        else:
            if shared is None:
                shared = shared_emulator.find_or_start(
                    state.run_dir,
                    exit_with_pid=os.getppid(),  # the xdist controller
                    isolation=settings.emulator_isolation,
                    ready_delay=settings.emulator_ready_delay,
                    project_id=settings.project_in_use,
                )
            url, token = shared.url, shared.token
            isolation, reason = shared.isolation, shared.isolation_reason
        state.emulator_endpoint = (url, token)
        state.require_stats().note_emulator(url, isolation, reason)
    return state.emulator_endpoint


def open_client(state: PluginState, settings: Settings) -> NorthflankClient:
    """A client for the backend the settings chose (starting the embedded emulator if needed)."""
    from pytest_northflank.client import NorthflankClient

    if settings.backend_in_use == "emulator":
        url, token = embedded_emulator_endpoint(state, settings)
        client = NorthflankClient(
            token, base_url=url, team_id=settings.team, user_agent=_user_agent()
        )
    else:
        settings.check_usable()  # a conftest may have overridden nf_settings
        if settings.token is None:
            raise ConfigError("the northflank backend needs NORTHFLANK_API_TOKEN")
        client = NorthflankClient(
            settings.token.get_secret_value(),
            base_url=settings.api_url,
            team_id=settings.team,
            user_agent=_user_agent(),
        )
    state.clients.append(client)
    return client


def is_northflank_api(base_url: str) -> bool:
    """Whether ``base_url`` is Northflank's own API (not an emulator or a proxy): where its
    dashboard and CLI apply."""
    return urlsplit(base_url).hostname == NORTHFLANK_API_HOST


def dashboard_url(settings: Settings, base_url: str, project_id: str, service_id: str) -> str:
    """Where a person looks at a service: the Northflank dashboard when the API is Northflank's,
    otherwise (the emulator, a standalone one included) the service's address in the API."""
    if not is_northflank_api(base_url):
        scope = f"/v1/teams/{settings.team}" if settings.team else "/v1"
        return f"{base_url.rstrip('/')}{scope}/projects/{project_id}/services/{service_id}"
    team = settings.team or "personal"
    return f"{DASHBOARD}/t/{team}/project/{project_id}/services/{service_id}"


def progress_writer(config: pytest.Config) -> Callable[[str], None] | None:
    """A function printing one line on the terminal mid-test, or None where nobody would see it."""
    if hasattr(config, "workerinput"):
        return None  # an xdist worker's output goes nowhere
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return None
    capture = config.pluginmanager.get_plugin("capturemanager")

    def write(message: str) -> None:
        with (
            capture.global_and_fixture_disabled()
            if capture is not None
            else contextlib.nullcontext()
        ):
            reporter.write_line(f"northflank: {message}")

    return write


def _refuse_to_delete_shared(sandbox: Sandbox) -> None:
    raise ConfigError(
        f"sandbox {sandbox.name} is shared by the whole run; it is deleted when the run ends, "
        "not by one test"
    )


class Provisioner:
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
        from pytest_northflank.readiness import ReadinessBoard

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
        self._create_missing_tags = create_missing_tags
        self._known_tags: set[str] = set()
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

    @classmethod
    def for_session(
        cls, state: PluginState, client: NorthflankClient, settings: Settings
    ) -> Provisioner:
        """The provisioner of a pytest process: the run's ledger and shared rate-limit figures,
        and (unless ``--nf-warm-ahead`` is 0) a warm-ahead pool for the collected tests."""
        from pytest_northflank.budget import SharedListing, SharedQuota
        from pytest_northflank.pool import workers_sharing_tests

        workers = workers_sharing_tests(state.config)
        provisioner = cls(
            client,
            settings,
            state.require_stats(),
            owner=Ownership(state.run_id, state.worker_id),
            project_id=settings.project_in_use,
            progress=progress_writer(state.config),
            ledger=state.ledger,
            ledger_owner=state.ledger_owner,
            register=state.sandboxes.append,
            create_missing_tags=settings.backend_in_use == "emulator",
            quota=SharedQuota.in_run_dir(state.run_dir, processes=workers),
            # xdist workers waiting at the same time share their listings.
            shared_listing=(
                None
                if state.is_controller
                else SharedListing.in_run_dir(state.run_dir, settings.project_in_use)
            ),
        )
        if settings.warm_ahead != 0 and state.sandbox_demand:
            from pytest_northflank.pool import Shelf, WarmPool, depth_policy, plan

            # Workers dealt tests at run time share one shelf; otherwise each has its own.
            shelf = "warm-ahead.json" if workers > 1 else f"warm-ahead-{state.worker_id}.json"
            provisioner.pool = WarmPool(
                provisioner,
                plan(state.sandbox_demand, settings),
                Shelf(state.run_dir / shelf),
                depth=depth_policy(settings.warm_ahead),
                owner=state.ledger_owner,
                allowed=lambda: not provisioner.quota_is_low(),
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
        from pytest_northflank.client.models import DeploymentServiceSpec

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
            description=owner.description(now),
            expiry_time=math.ceil(expiry) if expiry is not None else None,
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
        if self._create_missing_tags:
            self._ensure_tags(spec.tags)
        if self.ledger is not None:
            self.ledger.record_intent(
                name=spec.name,
                project_id=self.project_id,
                worker_id=self.owner.worker_id,
                owner=self.ledger_owner,
                shared=shared,
            )
        try:
            service = self.client.create_deployment_service(self.project_id, spec)
        except ApiError as error:
            if self.ledger is not None and create_was_refused(error):
                reason = mask(f"{error.status} {error.api_message}", secret_values(spec.env))
                self.ledger.record_refused(spec.name, reason)
            if on_refused is not None and refusal_recurs(error):
                on_refused()
            raise ProvisioningError(self.explain_create_error(error, spec)) from None
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
                    raise DeploymentFailed(self._not_ready_text(service, "its deployment FAILED"))
                now = self._clock()
                if now >= deadline:
                    raise ReadyTimeout(
                        self._not_ready_text(service, f"it was not ready within {timeout:g} s")
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
            return self.explain_api_error(error, "read", f"reading service {service_id}")
        return f"reading service {service_id} failed: {error}"

    def quota_is_low(self) -> bool:
        """True when the run's shared rate-limit figures say to spend no optional requests."""
        return self.quota is not None and self.quota.is_low()

    def _publish_quota(self) -> None:
        if self.quota is not None:
            self.quota.publish(self.client.rate_limit)

    def delete(self, sandbox: Sandbox) -> bool:
        """Delete the sandbox's service; False when it was already gone."""
        __tracebackhide__ = True  # users need the message, not our frames
        if sandbox.deleted:
            return False
        try:
            existed = self.client.delete_service(self.project_id, sandbox.id)
        except ApiError as error:
            self._publish_quota()
            raise ProvisioningError(
                f"could not delete sandbox {sandbox.name} (service {sandbox.id} in project "
                f"{self.project_id}): "
                + self.explain_api_error(error, "delete", f"deleting service {sandbox.id}")
                + f"\nDelete it by hand: {sandbox.dashboard_url}"
            ) from None
        self._publish_quota()
        sandbox.deleted = True
        with self._lock:
            if sandbox in self.alive:
                self.alive.remove(sandbox)
            self.stats.deleted += 1
        if self.ledger is not None:
            self.ledger.record_deleted(sandbox.name, found=existed)
        return existed

    def _ensure_tags(self, names: list[str]) -> None:
        with self._lock:
            missing = set(names) - self._known_tags
            if not missing:
                return
            self._known_tags.update(tag.name for tag in self.client.list_tags())
            for name in sorted(missing - self._known_tags):
                self.client.create_tag(name)
                self._known_tags.add(name)

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
        from pytest_northflank.client.models import Service

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
        """Delete a sandbox made ahead that no test took."""
        __tracebackhide__ = True  # users need the message, not our frames
        self.delete(self._handle(service_id, name, options))
        with self._lock:
            self.stats.made_ahead_unused += 1

    def attach(self, service_id: str, name: str, options: SandboxOptions) -> Sandbox:
        """A handle on a ready sandbox another process of the run made (the shared one)."""
        sandbox = self._handle(service_id, name, options, shared=True)
        if self._register is not None:
            self._register(sandbox)
        return sandbox

    def release(self, sandbox: Sandbox) -> None:
        """End of the sandbox's scope: delete it, or keep it when its keep mode says so."""
        __tracebackhide__ = True  # users need the message, not our frames
        if sandbox.deleted or sandbox.kept:
            return
        keep = sandbox.options.keep
        if keep == "always" or (keep == "on-failure" and sandbox.failed_tests):
            from pytest_northflank.reporting import KeptSandbox

            sandbox.kept = True
            with self._lock:
                if sandbox in self.alive:
                    self.alive.remove(sandbox)
            if self.ledger is not None:
                self.ledger.record_kept(sandbox.name)
            self.stats.kept.append(KeptSandbox.of(sandbox, self.settings))
            return
        self.delete(sandbox)

    def release_leftovers(self) -> None:
        """Release every sandbox no scope released (made from a thread, say) and delete those
        made ahead that no test took; report failures."""
        errors = []
        if self.pool is not None:
            pool, self.pool = self.pool, None
            try:
                pool.close()
            except NorthflankError as error:
                errors.append(str(error))
            with self._lock:
                self.stats.made_ahead += pool.made
                self.stats.note_warm_ahead(pool.policy.mode, pool.depth_reached)
        self.board.close()
        for sandbox in list(self.alive):
            try:
                self.release(sandbox)
            except NorthflankError as error:
                errors.append(str(error))
        if errors:
            raise ProvisioningError("\n".join(errors))

    def _after_failure(self, sandbox: Sandbox) -> str:
        """Delete a sandbox that never became ready (unless asked to keep), and say so."""
        if sandbox.options.keep != "never":
            from pytest_northflank.reporting import KeptSandbox

            sandbox.kept = True
            if self.ledger is not None:
                self.ledger.record_kept(sandbox.name)
            self.stats.kept.append(KeptSandbox.of(sandbox, self.settings))
            return f"\nKept for inspection (keep={sandbox.options.keep}): {sandbox.dashboard_url}"
        try:
            existed = self.delete(sandbox)
        except ProvisioningError as error:
            return f"\n{error}"
        if not existed:
            return "\nThe sandbox was already gone (deleted from outside this run)."
        return "\nThe sandbox was deleted."

    # ----------------------------------------------------------------------- messages

    def _not_ready_text(self, service: Service, what: str) -> str:
        status = service.deployment_status or "none"
        reason = service.deployment_reason or "none given"
        message = service.deployment_message
        if message is None:
            # A status seen in a listing has no message: ask for the service itself.
            with contextlib.suppress(NorthflankError):
                message = self.client.get_service(self.project_id, service.id).deployment_message
        if message:
            reason += f": {message}"
        text = (
            f"sandbox {service.name} (service {service.id} in project {self.project_id}) did not "
            f"become ready: {what}; last status {status}, reason {reason}."
        )
        return text + self._log_tail(service.id)

    def _log_tail(self, service_id: str) -> str:
        try:
            lines = self.client.fetch_logs(
                self.project_id, service_id, line_limit=LOG_LINES_IN_ERRORS
            )
        except NorthflankError as error:
            return f"\n(its logs could not be read: {error})"
        if not lines:
            return "\nIt wrote no log lines."
        body = "\n".join(f"  {line.log}" for line in chronological(lines)[-LOG_LINES_IN_ERRORS:])
        return f"\nLast log lines:\n{body}"

    def explain_create_error(self, error: ApiError, spec: DeploymentServiceSpec) -> str:
        what = f"creating sandbox {spec.name} in project {self.project_id}"
        message = (error.api_message or "").lower()
        if "tag" in message and ("not found" in message or "does not exist" in message):
            return self._unknown_tag_text(error, spec)
        if "tagged as spot" in message or "spot nodes" in message:
            return self._spot_text(error, spec)
        if isinstance(error, NotFoundError):
            return self._unknown_project_text(error)
        if isinstance(error, ApiValidationError):
            # The error text already summarises the API's details.
            return mask(
                f"Northflank refused {what}: {error}. The sandbox was: image {spec.image} "
                f"(from {self._origin('image', spec.image)}), plan {spec.plan} (from "
                f"{self._origin('plan', spec.plan)}), tags {list(spec.tags) or 'none'}.",
                secret_values(spec.env),
            )
        return self.explain_api_error(error, "create", what)

    def _origin(self, name: str, value: object) -> str:
        """Where a sandbox option came from: the settings, or the test's own request."""
        if getattr(self.settings, name) == value:
            return self.settings.source_of(name)
        return "the test's nf_sandbox marker or nf_sandbox_factory call"

    def explain_api_error(self, error: ApiError, permission: str, what: str) -> str:
        if isinstance(error, PermissionDeniedError):
            return (
                f"the API token may not do this ({what}): 403 {error.api_message}\n"
                f"Its API role needs the permission {PERMISSIONS[permission]}: add it to the "
                "token's API role (or template) in the dashboard, or use a token that has it."
            )
        if isinstance(error, AuthenticationError):
            return (
                f"the API rejected the token from {self.settings.token_source or 'the emulator'} "
                f"({what}): 401 {error.api_message}\nCheck that it is valid and not expired."
            )
        if isinstance(error, RateLimitedError):
            reset = (
                f"; the quota resets in {error.reset_after:.0f} s"
                if error.reset_after is not None
                else ""
            )
            return f"the API's hourly request quota is spent ({what}){reset}."
        return f"{what} failed: {error}"

    def _spot_text(self, error: ApiError, spec: DeploymentServiceSpec) -> str:
        had = f" (this one had tags: {', '.join(spec.tags)})" if spec.tags else ""
        head = (
            f'Northflank refused to create sandbox {spec.name}: "{error.api_message}".\n'
            "The project's cluster has only spot nodes, so every service needs a tag whose "
            f"useSpotNodes is on{had}.\n"
        )
        try:
            spot = [tag.name for tag in self.client.list_tags() if tag.use_spot_nodes]
        except PermissionDeniedError:
            return (
                f"{head}The token cannot list tags (that needs {PERMISSIONS['tags']}): find the "
                "spot tag in the dashboard and pass it with --nf-tag NAME (ini: nf_tags = NAME)."
            )
        except NorthflankError as list_error:
            return f"{head}(Listing the tags failed too: {list_error}.)"
        if not spot:
            return (
                f"{head}No tag of this account has useSpotNodes: create one in the dashboard "
                "with 'Use spot nodes' on, then pass it with --nf-tag NAME (ini: nf_tags = NAME)."
            )
        first = spot[0]
        return (
            f"{head}Tags with useSpotNodes: {', '.join(spot)}.\n"
            f"Use one: --nf-tag {first} (ini: nf_tags = {first}; marker: "
            f"@pytest.mark.nf_sandbox(tags=[{first!r}]))."
        )

    def _unknown_tag_text(self, error: ApiError, spec: DeploymentServiceSpec) -> str:
        head = (
            f'Northflank refused to create sandbox {spec.name}: "{error.api_message}".\n'
            f"Services may only carry tags that exist (this one had: {', '.join(spec.tags)}).\n"
        )
        try:
            names = [
                f"{tag.name} (useSpotNodes)" if tag.use_spot_nodes else tag.name
                for tag in self.client.list_tags()
            ]
        except NorthflankError as list_error:
            return f"{head}(Listing the tags failed too: {list_error}.)"
        return (
            f"{head}Tags of this account: {', '.join(names) or 'none'}.\n"
            "Fix --nf-tag / nf_tags or the marker's tags=, or create the tag in the dashboard."
        )

    def _unknown_project_text(self, error: ApiError) -> str:
        source = self.settings.source_of("project")
        head = f"project {self.project_id!r} (from {source}) was not found: {error.api_message}\n"
        try:
            projects = self.client.list_projects()
        except PermissionDeniedError:
            return (
                f"{head}The token cannot list projects either (that needs "
                f"{PERMISSIONS['projects']}); check the id in the dashboard URL."
            )
        except NorthflankError as list_error:
            return f"{head}(Listing the projects failed too: {list_error}.)"
        if not projects:
            seen = "The token can see no project at all: is it a token of the right team?"
        else:
            listed = ", ".join(
                f"{p.id} ({p.name})" if p.name and p.name != p.id else p.id for p in projects
            )
            seen = f"Projects this token can see: {listed}."
        return (
            f"{head}{seen}\nSet the project with --nf-project, the ini key nf_project or "
            "NORTHFLANK_PROJECT_ID."
        )
