"""What a run did with sandboxes and the API, per process: xdist workers send theirs to the
controller as JSON, which merges them for the summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_northflank.client import NorthflankClient
    from pytest_northflank.config.settings import Settings
    from pytest_northflank.sandbox import Sandbox


@dataclass
class KeptSandbox:
    """A sandbox left running on purpose, and how to reach and delete it."""

    name: str
    service_id: str
    project_id: str
    dashboard_url: str
    backend: str
    api_url: str
    tests: list[str] = field(default_factory=list)
    failed_tests: list[str] = field(default_factory=list)
    # How each failed test went wrong ("failed" or "error"), and the keep mode.
    failures: dict[str, str] = field(default_factory=dict)
    keep: str = "on-failure"

    @property
    def reason(self) -> str:
        """Why it was kept: ``failed``, ``error`` or ``always``."""
        if self.failed_tests:
            return self.failures.get(self.failed_tests[0], "failed")
        return "always"

    @classmethod
    def of(cls, sandbox: Sandbox, settings: Settings) -> KeptSandbox:
        return cls(
            name=sandbox.name,
            service_id=sandbox.id,
            project_id=sandbox.project_id,
            dashboard_url=sandbox.dashboard_url,
            backend=settings.backend_in_use,
            api_url=settings.api_url,
            tests=list(sandbox.tests),
            failed_tests=list(sandbox.failed_tests),
            failures=dict(sandbox.failures),
            keep=sandbox.options.keep,
        )


@dataclass
class RunStats:
    """What this process did with sandboxes and the API."""

    created: int = 0
    deleted: int = 0
    failed: int = 0
    kept: list[KeptSandbox] = field(default_factory=list)
    # How long each test waited for its sandbox to be ready (create to ready, unless it was
    # made ahead).
    provisioning_seconds: list[float] = field(default_factory=list)
    # Warm-ahead: sandboxes made before a test asked, taken by a test, deleted unused.
    made_ahead: int = 0
    made_ahead_used: int = 0
    made_ahead_unused: int = 0
    # Warm-ahead's mode ("auto" or "fixed", None: off or unused) and the highest depth a
    # process used (the fixed depth, or the deepest auto reached).
    warm_ahead_mode: str | None = None
    warm_ahead_depth: int = 0
    api_requests: int = 0
    rate_limit_limit: int | None = None
    rate_limit_remaining: int | None = None
    rate_limit_reset_after: float | None = None
    rate_limit_observed: float | None = None
    # The embedded emulators started (one per process: xdist workers each have their own).
    emulators: list[dict[str, str]] = field(default_factory=list)
    # What the run's cleanup did beyond the fixtures' teardown (crashed workers, leftovers).
    cleanup_notes: list[str] = field(default_factory=list)
    # Sandboxes made by module-, class- or package-scoped fixtures, as [scope, the node id
    # of the module/class, fixture name]: under xdist the same entry from several workers is
    # a copy (the summary says how to share them).
    scoped: list[list[str]] = field(default_factory=list)
    # Emulator images that ran on this machine's userland: notice -> tests affected.
    image_fallbacks: dict[str, int] = field(default_factory=dict)

    def note_image_fallback(self, notice: str, tests: int = 1) -> None:
        self.image_fallbacks[notice] = self.image_fallbacks.get(notice, 0) + tests

    def note_warm_ahead(self, mode: str | None, depth: int) -> None:
        if mode is not None:
            self.warm_ahead_mode = mode
        self.warm_ahead_depth = max(self.warm_ahead_depth, depth)

    def note_emulator(self, url: str, isolation: str, reason: str) -> None:
        self.emulators.append({"url": url, "isolation": isolation, "reason": reason})

    def record_client(self, client: NorthflankClient) -> None:
        self.api_requests += client.request_count
        rate = client.rate_limit
        if rate is not None:
            observed = rate.observed_at.timestamp()
            if self.rate_limit_observed is None or observed >= self.rate_limit_observed:
                self.rate_limit_limit = rate.limit
                self.rate_limit_remaining = rate.remaining
                self.rate_limit_reset_after = rate.reset_after
                self.rate_limit_observed = observed

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def merge(self, other: dict[str, Any]) -> None:
        self.created += int(other.get("created", 0))
        self.deleted += int(other.get("deleted", 0))
        self.failed += int(other.get("failed", 0))
        self.kept += [KeptSandbox(**kept) for kept in other.get("kept", [])]
        self.provisioning_seconds += [float(s) for s in other.get("provisioning_seconds", [])]
        self.made_ahead += int(other.get("made_ahead", 0))
        self.made_ahead_used += int(other.get("made_ahead_used", 0))
        self.made_ahead_unused += int(other.get("made_ahead_unused", 0))
        self.note_warm_ahead(other.get("warm_ahead_mode"), int(other.get("warm_ahead_depth", 0)))
        self.cleanup_notes += [str(note) for note in other.get("cleanup_notes", [])]
        self.api_requests += int(other.get("api_requests", 0))
        observed = other.get("rate_limit_observed")
        if observed is not None and (
            self.rate_limit_observed is None or observed >= self.rate_limit_observed
        ):
            self.rate_limit_limit = other.get("rate_limit_limit")
            self.rate_limit_remaining = other.get("rate_limit_remaining")
            self.rate_limit_reset_after = other.get("rate_limit_reset_after")
            self.rate_limit_observed = observed
        self.emulators += [dict(emulator) for emulator in other.get("emulators", [])]
        for notice, tests in (other.get("image_fallbacks") or {}).items():
            self.note_image_fallback(str(notice), int(tests))
        self.scoped += [[str(part) for part in entry] for entry in other.get("scoped", [])]
