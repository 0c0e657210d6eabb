"""One cheap request before any test: is the API there, is the token accepted, is the project
there? And the breaker that stops a run after a fatal answer met later.

Without these, a wrong URL, token or project fails every sandbox test on its own, slowly, one
request (or retry loop) each. With them a run stops at once with one message naming what is
wrong and where the value came from.
"""

from __future__ import annotations

import threading

from pytest_northflank.client import NorthflankClient
from pytest_northflank.config.settings import Settings
from pytest_northflank.errors import (
    AuthenticationError,
    ConnectFailed,
    NorthflankError,
    NotFoundError,
    PermissionDeniedError,
    ProvisioningError,
)
from pytest_northflank.provisioning.messages import explain_api_error, unknown_project_text

# Requests the preflight may make when the first one fails: it is one attempt, then one retry
# for a connection refused while an API restarts.
PREFLIGHT_RETRIES = 1
PREFLIGHT_TIMEOUT = 10.0
# The variable that points the plugin at another API (an emulator started by hand, often).
BASE_URL_VARIABLE = "NORTHFLANK_API_BASE_URL"

FATAL_ERRORS = (AuthenticationError, PermissionDeniedError)


def unreachable_text(settings: Settings, error: NorthflankError) -> str:
    """The API does not answer at all: name the URL, where it came from, and the likely fix."""
    source = settings.source_of("api_url")
    text = f"cannot reach the Northflank API at {settings.api_url} (from {source}): {error}\n"
    if BASE_URL_VARIABLE in source:
        return (
            text + f"Start the emulator (pytest-northflank emulator) or unset {BASE_URL_VARIABLE}."
        )
    if source == "the default":
        return text + "Check the network connection and any proxy settings (HTTPS_PROXY)."
    return text + f"Check the URL, or start the API it points at (it came from {source})."


def preflight(settings: Settings, client: NorthflankClient) -> str | None:
    """What stops the run before any test, or None when the API, token and project answer.

    Only a certain failure stops the run: no connection, a token refused (401) or lacking a
    permission (403), a project not found (404). A 5xx, a timeout or a 429 says nothing about
    the configuration, so the run goes on and meets it (with retries) where it matters.
    """
    project = settings.project_in_use
    try:
        client.check_project(project)
    except ConnectFailed as error:
        return unreachable_text(settings, error)
    except NotFoundError as error:
        return unknown_project_text(client, settings, project, error)
    except FATAL_ERRORS as error:
        return explain_api_error(settings, error, "read", f"listing the services of {project}")
    except NorthflankError:
        return None
    return None


def is_fatal(error: NorthflankError) -> bool:
    """Whether an answer to a create means no further create of this run can succeed: the
    token refused (401) or lacking the permission (403), the project not found (a create's
    only 404), or no connection to the API at all (after the client's own retries)."""
    return isinstance(error, (*FATAL_ERRORS, NotFoundError, ConnectFailed))


class Breaker:
    """Trips on the first fatal answer; from then on every sandbox request of this process
    fails at once with that message, sending nothing."""

    def __init__(self) -> None:
        self._message: str | None = None
        self._lock = threading.Lock()

    @property
    def tripped(self) -> bool:
        return self._message is not None

    def trip(self, message: str) -> None:
        with self._lock:
            if self._message is None:
                self._message = message

    def check(self) -> None:
        """Raise ``ProvisioningError`` with the first fatal message, if there was one."""
        __tracebackhide__ = True
        if self._message is not None:
            raise ProvisioningError(
                f"{self._message}\n(no request sent: an earlier answer of the API said this run "
                "cannot work)"
            )
