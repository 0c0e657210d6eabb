"""Driving the control plane from Python: :class:`EmulatorControl` calls the ``/_emulator/``
routes over HTTP, so it drives an emulator in this process and one started by
``python -m pytest_northflank.emulator`` alike.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from pytest_northflank.emulator.faults import RATE_LIMIT_WINDOW_SECONDS
from pytest_northflank.emulator.routes.control import (
    DEFAULT_CREATE_FAULT,
    DEFAULT_DELETE_FAULT,
    DEFAULT_REQUEST_FAULT,
    PREFIX,
)
from pytest_northflank.emulator.state import BYOC_PROJECT_CREATE_MESSAGE
from pytest_northflank.errors import EmulatorError

__all__ = ["EmulatorControl"]


class EmulatorControl:
    """Drives an emulator's control plane from Python (over its ``/_emulator/`` routes).

    Faults are consumed by the API calls they affect; :meth:`reset` clears them along with
    every service and tag. Errors raise :class:`~pytest_northflank.errors.EmulatorError`.
    """

    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"EmulatorControl({self.url!r})"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            with httpx.Client(timeout=self._timeout, headers=headers) as client:
                response = client.request(method, f"{self.url}{PREFIX}{path}", json=body)
        except httpx.HTTPError as exc:
            raise EmulatorError(f"emulator control {method} {path} failed: {exc}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code != 200 or not isinstance(payload, dict):
            message = response.text[:300]
            if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
                message = str(payload["error"].get("message"))
            raise EmulatorError(
                f"emulator control {method} {path} failed: {response.status_code} {message}"
            )
        return payload.get("data")

    def reset(self) -> None:
        """Delete every service (stopping its container) and tag; clear faults and the rate
        limit; restore the projects and cluster settings the emulator started with."""
        self._call("POST", "/reset")

    def state(self) -> dict[str, Any]:
        """A dump of projects, tags, services (with their containers), faults, rate limit."""
        result: dict[str, Any] = self._call("GET", "/state")
        return result

    def info(self) -> dict[str, Any]:
        """``version``, ``isolation``, ``isolationReason``, the project ids, and
        ``imageFallbacks``: the images that ran on this machine's userland (``image``,
        ``reason``, ``notice``)."""
        result: dict[str, Any] = self._call("GET", "/info")
        return result

    def fail_next_creates(
        self,
        count: int = 1,
        status: int = DEFAULT_CREATE_FAULT[0],
        message: str = DEFAULT_CREATE_FAULT[1],
        *,
        after_create: bool = False,
    ) -> None:
        """The next ``count`` service creates answer ``status``/``message``. With
        ``after_create`` the service is created anyway (an ambiguous failure)."""
        body = {"count": count, "status": status, "message": message, "afterCreate": after_create}
        self._call("POST", "/faults/create", body)

    def fail_next_deletes(
        self,
        count: int = 1,
        status: int = DEFAULT_DELETE_FAULT[0],
        message: str = DEFAULT_DELETE_FAULT[1],
    ) -> None:
        """The next ``count`` service deletes answer ``status``/``message`` and delete nothing."""
        self._call("POST", "/faults/delete", {"count": count, "status": status, "message": message})

    def fail_next_requests(
        self,
        count: int = 1,
        status: int = DEFAULT_REQUEST_FAULT[0],
        message: str = DEFAULT_REQUEST_FAULT[1],
    ) -> None:
        """The next ``count`` API requests over HTTP, whatever they are, answer ``status`` and
        ``message`` and do nothing (a burst of 5xx, or of 429 with the quota not spent)."""
        body = {"count": count, "status": status, "message": message}
        self._call("POST", "/faults/requests", body)

    def set_ready(self, delay: float | None = None, fail: bool | None = None) -> None:
        """Readiness of deployments started from now on: ``delay`` seconds to COMPLETED;
        ``fail=True`` makes them end FAILED instead (after the delay)."""
        body: dict[str, Any] = {}
        if delay is not None:
            body["delay"] = delay
        if fail is not None:
            body["fail"] = fail
        self._call("POST", "/faults/readiness", body)

    def drop_next_exec(self, after_frames: int = 0, count: int = 1) -> None:
        """The next ``count`` exec connections are closed (1011, no completion frame) after
        ``after_frames`` output frames; their commands are killed."""
        self._call("POST", "/faults/exec-drop", {"afterFrames": after_frames, "count": count})

    def exit_code_as_string(self, on: bool = True) -> None:
        """Send ``exitCode`` as a JSON string ("3"), as the real proxy is said to."""
        self._call("POST", "/faults/exit-code-as-string", {"enabled": on})

    def clear_faults(self) -> None:
        """Drop every pending fault; readiness goes back to the configured delay."""
        self._call("POST", "/faults/clear")

    def set_rate_limit(
        self, per_hour: int | None, *, window_seconds: float = RATE_LIMIT_WINDOW_SECONDS
    ) -> None:
        """A new hourly quota (``None``: unlimited), starting a fresh window. A shorter
        ``window_seconds`` than the hour lets a test see the quota run out and come back."""
        self._call("POST", "/rate-limit", {"perHour": per_hour, "windowSeconds": window_seconds})

    def set_spot_only(self, on: bool = True) -> None:
        """Make the cluster spot-only: creates need a tag whose ``useSpotNodes`` is true."""
        self._call("POST", "/cluster", {"spotOnly": on})

    def set_project_creation_error(self, message: str | None = BYOC_PROJECT_CREATE_MESSAGE) -> None:
        """``POST /v1/projects`` fails with ``message`` (as on a BYOC cluster); ``None``
        lets it work again."""
        self._call("POST", "/cluster", {"projectCreateError": message})

    def delete_service(self, project_id: str, service_id: str) -> None:
        """Delete a service behind the client's back (as from the dashboard)."""
        self._call(
            "DELETE",
            f"/projects/{quote(project_id, safe='')}/services/{quote(service_id, safe='')}",
        )
