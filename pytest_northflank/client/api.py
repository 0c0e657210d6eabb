"""The Northflank API client: REST on one pooled ``httpx.Client``, commands and file copy over
the exec WebSocket, logs. Knows nothing about pytest.

(About 560 lines: the one client class users hold; the work behind each method lives in
:mod:`.rest`, :mod:`.exec`, :mod:`.files`, :mod:`.logs` and :mod:`.forwarding`.)

::

    with NorthflankClient(token, base_url=url) as nf:
        service = nf.create_deployment_service("default-project", DeploymentServiceSpec(
            name="my sandbox", command="sleep infinity"))
        nf.wait_for_service_ready("default-project", service.id)
        print(nf.run("default-project", service.id, "uname -a").stdout_text)

Every failure is a :class:`pytest_northflank.errors.NorthflankError`; the token never
appears in a repr, message or log record.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import httpx

from pytest_northflank.client._closing import ClosesOnExit
from pytest_northflank.client.arguments import (
    check_count,
    check_ids,
    check_timeout,
    command_argv,
    describe_argv,
)
from pytest_northflank.client.connector import ExecConnector
from pytest_northflank.client.exec import run_command
from pytest_northflank.client.exec_session import ExecResult, ExecSession
from pytest_northflank.client.files import download, upload
from pytest_northflank.client.forwarding import PortForwarder
from pytest_northflank.client.logs import LogTail, fetch_logs, logs_query, open_tail
from pytest_northflank.client.models import (
    ContainerInfo,
    DeploymentServiceSpec,
    ForwardingInfo,
    LogLine,
    Project,
    RateLimitStatus,
    Service,
    ServiceSummary,
    Tag,
)
from pytest_northflank.client.rest import AmbiguousFailure, RestTransport, quote
from pytest_northflank.errors import (
    ConfigError,
    ConflictError,
    DeploymentFailed,
    NetworkError,
    NorthflankError,
    NotFoundError,
    ReadyTimeout,
)

__all__ = ["DEFAULT_BASE_URL", "NorthflankClient"]

DEFAULT_BASE_URL = "https://api.northflank.com"
logger = logging.getLogger("pytest_northflank.client")


class NorthflankClient(ClosesOnExit):
    """A client for one Northflank API base and token (optionally team-scoped).

    ``timeout`` bounds each REST request; ``max_retries`` is how often idempotent requests
    are retried (transport errors, 5xx, 429); ``transport`` swaps the httpx transport (tests).
    ``max_rate_limit_wait`` is the longest a 429 may make the client wait for the quota reset
    before raising ``RateLimitedError``. Thread-safe; close it (or use ``with``) when done.
    """

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        team_id: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        transport: httpx.BaseTransport | None = None,
        user_agent: str | None = None,
        max_rate_limit_wait: float = 120.0,
        ws_open_timeout: float = 30.0,
        ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self._rest = RestTransport(
            token,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            transport=transport,
            user_agent=user_agent,
            max_rate_limit_wait=max_rate_limit_wait,
        )
        if team_id is not None and not team_id.strip():
            raise ConfigError("team_id must not be empty (use None for no team)")
        self.team_id = team_id
        self._exec = ExecConnector(self._rest, team_id=team_id, open_timeout=ws_open_timeout)
        # ca_file: one more CA to trust for the forwarding tunnel (the emulator's own).
        tls = ssl.create_default_context()
        if ca_file is not None:
            try:
                tls.load_verify_locations(cafile=os.fspath(ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot read the CA file {os.fspath(ca_file)}: {exc}") from None
        self._forwarder = PortForwarder(
            lambda: self._rest.token,
            ssl_context=tls,
            open_timeout=ws_open_timeout,
            user_agent=self._rest.user_agent,
        )

    # ------------------------------------------------------------------ plumbing

    def __repr__(self) -> str:
        team = f", team_id={self.team_id!r}" if self.team_id else ""
        return f"NorthflankClient(base_url={self.base_url!r}{team})"

    def close(self) -> None:
        """Close the connection pool and every port forward. Idempotent."""
        self._forwarder.close()
        self._rest.close()

    @property
    def base_url(self) -> str:
        """The API base URL, without a trailing slash."""
        return self._rest.base_url

    @property
    def rate_limit(self) -> RateLimitStatus | None:
        """The latest ``x-ratelimit-*`` figures, or None if the API sent none yet."""
        return self._rest.rate_limit

    @property
    def request_count(self) -> int:
        """REST requests sent so far, retries included."""
        return self._rest.request_count

    def _scope(self) -> str:
        return f"/v1/teams/{quote(self.team_id)}" if self.team_id else "/v1"

    def _project(self, project_id: str) -> str:
        check_ids(project_id=project_id)
        return f"{self._scope()}/projects/{quote(project_id)}"

    def _service(self, project_id: str, service_id: str) -> str:
        check_ids(project_id=project_id, service_id=service_id)
        return f"{self._project(project_id)}/services/{quote(service_id)}"

    @staticmethod
    def _data(envelope: dict[str, Any]) -> dict[str, Any]:
        data = envelope.get("data")
        return data if isinstance(data, dict) else {}

    # ------------------------------------------------------------------ projects and tags

    def list_projects(self) -> list[Project]:
        """Every project the token can see."""
        items = self._rest.paginate(f"{self._scope()}/projects", "projects")
        return [Project.model_validate(item) for item in items]

    def get_project(self, project_id: str) -> Project:
        """One project; ``NotFoundError`` if it does not exist."""
        return Project.model_validate(
            self._data(self._rest.request("GET", self._project(project_id)))
        )

    def list_tags(self) -> list[Tag]:
        """Every resource tag."""
        return [Tag.model_validate(t) for t in self._rest.paginate(f"{self._scope()}/tags", "tags")]

    def create_tag(self, name: str, *, use_spot_nodes: bool = False) -> Tag:
        """Create a tag (``use_spot_nodes`` for spot-only clusters). Sent once, never retried."""
        body: dict[str, Any] = {"name": name}
        if use_spot_nodes:
            body["useSpotNodes"] = True
        envelope = self._rest.request("POST", f"{self._scope()}/tags", body=body, idempotent=False)
        return Tag.model_validate(self._data(envelope))

    # ------------------------------------------------------------------ services

    def create_deployment_service(self, project_id: str, spec: DeploymentServiceSpec) -> Service:
        """Create a deployment service. Never blindly resent: if the outcome of a create is
        unknown (timeout or broken connection after sending, 5xx), the service is looked up by
        name and adopted if it exists; only if it does not is the create sent once more, and a
        409 on that second try means the first one worked (adopted too). A 409 on the first
        try is a real name clash and raises ``ConflictError``."""
        path = f"{self._project(project_id)}/services/deployment"
        payload = spec.to_payload()
        first = self._rest.post_create(path, payload)
        if not isinstance(first, AmbiguousFailure):
            return Service.model_validate(self._data(first))
        logger.info(
            "create of service %r was ambiguous (%s); looking it up", spec.name, first.error
        )
        adopted = self._find_service(project_id, spec.name, first.error)
        if adopted is not None:
            return adopted
        try:
            second = self._rest.post_create(path, payload)
        except ConflictError:
            adopted = self._find_service(project_id, spec.name, first.error)
            if adopted is None:
                raise
            return adopted
        if not isinstance(second, AmbiguousFailure):
            return Service.model_validate(self._data(second))
        adopted = self._find_service(project_id, spec.name, second.error)
        if adopted is not None:
            return adopted
        raise second.error

    def _find_service(self, project_id: str, name: str, cause: NorthflankError) -> Service | None:
        try:
            matches = [s for s in self.list_services(project_id) if s.name == name]
            if not matches:
                return None
            service = self.get_service(project_id, matches[0].id)
        except NorthflankError as exc:
            # The create's outcome stays unknown: report the create's own failure, with the
            # failed lookup as its cause.
            raise cause from exc
        logger.info("adopted service %r (%s) after an ambiguous create", name, service.id)
        return service

    def get_service(self, project_id: str, service_id: str) -> Service:
        """One service with its deployment status."""
        envelope = self._rest.request("GET", self._service(project_id, service_id))
        return Service.model_validate(self._data(envelope))

    def check_project(self, project_id: str) -> None:
        """One cheap request that proves the API is reachable, the token accepted and the
        project there (and its services readable): the first page of one service. Raises
        ``ConnectFailed``, ``AuthenticationError``, ``PermissionDeniedError`` or
        ``NotFoundError`` when not."""
        self._rest.request("GET", f"{self._project(project_id)}/services", params={"per_page": 1})

    def list_services(self, project_id: str) -> list[ServiceSummary]:
        """Every service of a project (all pages)."""
        items = self._rest.paginate(f"{self._project(project_id)}/services", "services")
        return [ServiceSummary.model_validate(item) for item in items]

    def delete_service(
        self, project_id: str, service_id: str, *, within: float | None = None
    ) -> bool:
        """Delete a service (and its volumes). False if it was already gone (404). ``within``:
        seconds for every attempt together (connection failures and 5xx are retried)."""
        try:
            self._rest.request(
                "DELETE",
                self._service(project_id, service_id),
                params={"delete_child_objects": "true"},
                within=within,
            )
        except NotFoundError:
            return False
        return True

    def set_service_description(self, project_id: str, service_id: str, description: str) -> None:
        """Replace a deployment service's description (``PATCH``; idempotent)."""
        check_ids(project_id=project_id, service_id=service_id)
        self._rest.request(
            "PATCH",
            f"{self._project(project_id)}/services/deployment/{quote(service_id)}",
            body={"description": description},
        )

    def pause_service(self, project_id: str, service_id: str) -> None:
        """Scale a service to zero and mark it paused."""
        self._rest.request("POST", f"{self._service(project_id, service_id)}/pause")

    def resume_service(self, project_id: str, service_id: str) -> None:
        """Resume a paused service."""
        self._rest.request("POST", f"{self._service(project_id, service_id)}/resume", body={})

    def restart_service(self, project_id: str, service_id: str) -> None:
        """Restart a service's instances."""
        # Not idempotent: a retry after an answer lost on the way could restart twice.
        self._rest.request(
            "POST", f"{self._service(project_id, service_id)}/restart", idempotent=False
        )

    def scale_service(self, project_id: str, service_id: str, instances: int) -> None:
        """Set the number of instances (0 or more)."""
        check_count("instances", instances, minimum=0)
        self._rest.request(
            "POST", f"{self._service(project_id, service_id)}/scale", body={"instances": instances}
        )

    def list_containers(self, project_id: str, service_id: str) -> list[ContainerInfo]:
        """The running instances (pods) of a service."""
        items = self._rest.paginate(
            f"{self._service(project_id, service_id)}/containers", "containers"
        )
        return [ContainerInfo.model_validate(item) for item in items]

    def wait_for_service_ready(
        self,
        project_id: str,
        service_id: str,
        *,
        timeout: float = 300.0,
        poll_interval: float = 1.5,
        max_poll_interval: float = 6.0,
    ) -> Service:
        """Poll until the deployment is COMPLETED and return the service.

        Polls start every ``poll_interval`` seconds and back off to ``max_poll_interval``
        (provisioning takes seconds to minutes, and every poll spends hourly quota); when the
        rate-limit figures show the quota running low, polls stretch to fit what is left.
        Raises ``DeploymentFailed`` on FAILED and ``ReadyTimeout`` after ``timeout``.
        """
        check_timeout(timeout)
        check_timeout(poll_interval, "poll_interval")
        check_timeout(max_poll_interval, "max_poll_interval")
        deadline = time.monotonic() + timeout
        interval = poll_interval
        while True:
            service = self.get_service(project_id, service_id)
            if service.deployment_status == "COMPLETED":
                return service
            if service.deployment_status == "FAILED":
                why = service.deployment_message or service.deployment_reason
                reason = f": {why}" if why else ""
                raise DeploymentFailed(f"service {service_id} deployment FAILED{reason}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReadyTimeout(
                    f"service {service_id} not ready after {timeout:g}s "
                    f"(status {service.deployment_status or 'unknown'})"
                )
            time.sleep(min(self._poll_delay(interval), remaining))
            interval = min(max_poll_interval, interval * 1.5)

    def _poll_delay(self, interval: float) -> float:
        limit = self._rest.rate_limit
        if (
            limit is not None
            and limit.remaining is not None
            and limit.reset_after is not None
            and 0 < limit.remaining < 100
        ):
            # Spread what is left of the quota over the rest of the window.
            return max(interval, limit.reset_after / limit.remaining)
        return interval

    # ------------------------------------------------------------------ exec

    def run(
        self,
        project_id: str,
        service_id: str,
        command: str | Sequence[str],
        *,
        shell: str | None = None,
        input: bytes | None = None,
        timeout: float | None = None,
        on_output: Callable[[str, bytes], object] | None = None,
        description: str | None = None,
        stop_remotely: bool = True,
    ) -> ExecResult:
        """Run a command to completion and return its exit code and exact output bytes.

        A string runs through ``sh -c`` (``shell="none"`` splits it and runs it directly;
        another ``shell`` such as ``"bash -c"`` gets the string appended); a sequence is an argv
        run as is. ``input`` is written to stdin, then EOF. With ``timeout`` the command runs
        under coreutils ``timeout -k 2 <timeout>`` so it is stopped remotely, and the client
        gives up a few seconds later; either way ``CommandTimeout`` is raised. With
        ``stop_remotely=False`` (a default limit: the image need not have ``timeout``) the
        client stops waiting at ``timeout`` and closes the session.
        ``on_output(stream, data)`` sees each output chunk as it arrives (the result holds
        them all too).
        ``description``: how messages show the command (default: its argv, quoted).
        """
        __tracebackhide__ = True  # pytest would print argv, which may carry env values
        return run_command(
            self._exec,
            project_id,
            service_id,
            command,
            shell=shell,
            input=input,
            timeout=timeout,
            on_output=on_output,
            description=description,
            stop_remotely=stop_remotely,
        )

    def open_session(
        self,
        project_id: str,
        service_id: str,
        command: str | Sequence[str],
        *,
        shell: str | None = None,
        tty: bool = False,
        rows: int = 24,
        columns: int = 80,
    ) -> ExecSession:
        """Start a command and return a streaming session (iterate output, ``write`` stdin,
        ``close_stdin``, ``resize``, ``wait``). Use it as a context manager."""
        argv = command_argv(command, shell)
        return self._exec.start(
            project_id,
            service_id,
            argv,
            tty=tty,
            rows=rows,
            columns=columns,
            description=describe_argv(argv),
        )

    # ------------------------------------------------------------------ files

    def upload(
        self,
        project_id: str,
        service_id: str,
        local_path: str | os.PathLike[str],
        remote_path: str,
        *,
        timeout: float | None = None,
    ) -> None:
        """Copy a local file or directory into the service, streamed (memory stays flat).

        A file lands at ``remote_path`` (inside it, if it is an existing directory); a
        directory's contents land in ``remote_path``. Modes, symlinks and empty directories
        are kept. Needs ``sh`` and ``tar`` in the image.
        """
        check_timeout(timeout)
        upload(self._exec, project_id, service_id, local_path, remote_path, timeout=timeout)

    def download(
        self,
        project_id: str,
        service_id: str,
        remote_path: str,
        local_path: str | os.PathLike[str],
        *,
        timeout: float | None = None,
    ) -> None:
        """Copy a file or directory out of the service, streamed and safely extracted.

        A file lands at ``local_path`` (inside it, if it is an existing directory); a
        directory's contents land in ``local_path``. Archive members that would escape the
        target raise ``UnsafeArchiveError``.
        """
        check_timeout(timeout)
        download(self._exec, project_id, service_id, remote_path, local_path, timeout=timeout)

    # ------------------------------------------------------------------ logs

    def fetch_logs(
        self,
        project_id: str,
        service_id: str,
        *,
        line_limit: int = 200,
        direction: str = "backward",
        duration: int | None = 600,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        container_name: str | None = None,
        text_includes: str | None = None,
    ) -> list[LogLine]:
        """The last ``line_limit`` log lines of a service (``queryType=range``), oldest first."""
        query = logs_query(
            query_type="range",
            line_limit=line_limit,
            direction=direction,
            duration=duration if start_time is None else None,
            start_time=start_time,
            end_time=end_time,
            container_name=container_name,
            text_includes=text_includes,
        )
        return fetch_logs(self._rest, f"{self._service(project_id, service_id)}/logs", query)

    def tail_logs(
        self,
        project_id: str,
        service_id: str,
        *,
        line_limit: int | None = None,
        container_name: str | None = None,
        text_includes: str | None = None,
        recv_timeout: float | None = None,
    ) -> LogTail:
        """Follow a service's logs live. Iterate the returned ``LogTail`` (a context manager);
        it ends when the server closes the stream, on ``close()``, or after ``recv_timeout``
        seconds without a line."""
        check_timeout(recv_timeout, "recv_timeout")
        query = logs_query(
            query_type="tail",
            line_limit=line_limit,
            container_name=container_name,
            text_includes=text_includes,
        )
        path = f"{self._service(project_id, service_id)}/logs"
        return open_tail(self._exec, self._rest, path, query, recv_timeout=recv_timeout)

    # ------------------------------------------------------------------ ports and forwarding

    def forwarding_info(self, project_id: str, service_id: str) -> ForwardingInfo:
        """Where the service's tunnel is, its running instances and forwardable ports.

        Raises :class:`NetworkError` when the backend cannot forward (the emulator without
        network namespaces says why)."""
        check_ids(project_id=project_id, service_id=service_id)
        scope = f"teams/{quote(self.team_id)}/" if self.team_id else ""
        path = (
            f"/v1/port-forwarding/info/{scope}projects/{quote(project_id)}"
            f"/services/{quote(service_id)}"
        )
        try:
            body = self._rest.request("GET", path)
        except ConflictError as exc:
            raise NetworkError(exc.api_message) from None
        try:
            return ForwardingInfo.model_validate(body)
        except ValueError:
            raise NetworkError(
                f"the port-forwarding info of {service_id!r} is unreadable"
            ) from None

    def forward(self, project_id: str, service_id: str, port: int) -> tuple[str, int]:
        """A ``127.0.0.1`` listener whose connections reach ``port`` of the service through
        the tunnel (one WebSocket per connection); the same port returns the same listener
        until :meth:`stop_forwarding` or :meth:`close`."""
        info = self.forwarding_info(project_id, service_id)
        if not any(p.internal_port == port for p in info.ports):
            listed = ", ".join(str(p.internal_port) for p in info.ports) or "none"
            raise NetworkError(
                f"service {service_id!r} has no forwardable port {port} (its TCP/HTTP ports: "
                f"{listed})"
            )
        if not info.pods:
            raise NetworkError(f"service {service_id!r} has no running instance to forward to")
        scope = f"teams/{quote(self.team_id)}/" if self.team_id else ""
        url = (
            f"wss://{info.target_domain}/tunnel/{scope}projects/{quote(project_id)}/services/"
            f"{quote(service_id)}/instance/{quote(info.pods[0])}/port/{port}"
        )
        return self._forwarder.forward((project_id, service_id, str(port)), url)

    def forward_error(self, project_id: str, service_id: str, port: int) -> str | None:
        """Why the latest connection through that forward failed, if one did."""
        return self._forwarder.last_error((project_id, service_id, str(port)))

    def stop_forwarding(self, project_id: str, service_id: str) -> None:
        """Close the service's local listeners and their connections."""
        self._forwarder.stop_matching((project_id, service_id))
