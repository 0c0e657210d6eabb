"""What the control plane injects: request faults, exec drops, readiness settings, and the
hourly rate limit. Held by :class:`~pytest_northflank.emulator.state.EmulatorState`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: The quota reported when no rate limit is configured: large enough never to matter.
UNLIMITED_QUOTA = 1_000_000
RATE_LIMIT_WINDOW_SECONDS = 3600.0


@dataclass
class RequestFault:
    """The next ``remaining`` requests of a kind fail with ``status`` and ``message``."""

    remaining: int
    status: int
    message: str
    #: creates only: do the work first, then answer with the error (an ambiguous failure)
    after_create: bool = False

    def take(self) -> bool:
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


@dataclass
class ExecDrop:
    """The next ``remaining`` exec connections are cut after ``after_frames`` output frames."""

    remaining: int
    after_frames: int


@dataclass
class Faults:
    """Injected failures, set through the control plane and applied by the routes."""

    create: RequestFault | None = None
    delete: RequestFault | None = None
    #: any ``/v1`` request over HTTP (a burst of 5xx or 429 at the API's front door)
    requests: RequestFault | None = None
    exec_drop: ExecDrop | None = None
    exit_code_as_string: bool = False
    #: readiness of deployments that start from now on
    ready_delay: float = 0.0
    fail_readiness: bool = False

    def to_json(self) -> dict[str, Any]:
        def fault(value: RequestFault | None) -> dict[str, Any] | None:
            if value is None or value.remaining <= 0:
                return None
            return {
                "remaining": value.remaining,
                "status": value.status,
                "message": value.message,
                "afterCreate": value.after_create,
            }

        drop = self.exec_drop
        return {
            "create": fault(self.create),
            "delete": fault(self.delete),
            "requests": fault(self.requests),
            "execDrop": (
                {"remaining": drop.remaining, "afterFrames": drop.after_frames}
                if drop is not None and drop.remaining > 0
                else None
            ),
            "exitCodeAsString": self.exit_code_as_string,
            "readyDelay": self.ready_delay,
            "failReadiness": self.fail_readiness,
        }


class RateLimiter:
    """An hourly request quota whose window starts with the first request (as documented).

    ``window`` shortens the hour, so that a test can see a quota run out and come back.
    """

    def __init__(self, per_hour: int | None, window: float = RATE_LIMIT_WINDOW_SECONDS) -> None:
        self.per_hour = per_hour
        self.window = window
        self.used = 0
        #: Requests answered 429 (over the whole life of this limiter, not one window).
        self.refused = 0
        #: Requests allowed, over the whole life of this limiter.
        self.total_used = 0
        self.window_start: float | None = None

    @property
    def limit(self) -> int:
        return UNLIMITED_QUOTA if self.per_hour is None else self.per_hour

    def take(self, now: float) -> tuple[bool, dict[str, str]]:
        """Count one request; whether it is allowed, and the ``x-ratelimit-*`` headers."""
        if self.window_start is None or now - self.window_start >= self.window:
            self.window_start, self.used = now, 0
        allowed = self.used < self.limit
        if allowed:
            self.used += 1
            self.total_used += 1
        else:
            self.refused += 1
        return allowed, self.headers(now)

    def headers(self, now: float) -> dict[str, str]:
        if self.window_start is None:
            reset = self.window
        else:
            reset = max(self.window - (now - self.window_start), 0.0)
        return {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(max(self.limit - self.used, 0)),
            "x-ratelimit-reset": str(math.ceil(reset)),
        }

    def to_json(self, now: float) -> dict[str, Any]:
        headers = self.headers(now)
        return {
            "perHour": self.per_hour,
            "used": self.used,
            "remaining": int(headers["x-ratelimit-remaining"]),
            "resetInSeconds": int(headers["x-ratelimit-reset"]),
            "windowSeconds": self.window,
            "totalUsed": self.total_used,
            "refused": self.refused,
        }
