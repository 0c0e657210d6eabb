"""``EmulatorServer``: the emulator served by uvicorn on a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import secrets
import socket
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import uvicorn

from pytest_northflank._version import __version__
from pytest_northflank.emulator.app import create_app
from pytest_northflank.emulator.context import EmulatorContext
from pytest_northflank.emulator.control_client import EmulatorControl
from pytest_northflank.emulator.deployments import Deployments
from pytest_northflank.emulator.images.options import (
    ImageOptions,
    build_provider,
    options_from_environment,
)
from pytest_northflank.emulator.images.provider import ImageProvider
from pytest_northflank.emulator.runtime import (
    DEFAULT_MAX_PROCESSES,
    ContainerRuntime,
    IsolationMode,
    IsolationSetting,
    LimitSetting,
)
from pytest_northflank.emulator.state import EmulatorConfig, EmulatorState
from pytest_northflank.emulator.tls import TlsFiles, make_tls_files, write_ca_file
from pytest_northflank.errors import EmulatorError

START_TIMEOUT_SECONDS = 30.0
#: How long open connections (log tails, exec sessions) get to finish on stop.
GRACEFUL_SHUTDOWN_SECONDS = 3


MIN_EXPOSED_TOKEN_LENGTH = 16


class EmulatorExposureWarning(UserWarning):
    """The emulator is reachable from other machines with a token that is easy to guess."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts this machine's connections."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere, or "" (every interface)


def exposure_warning(host: str, token: str) -> str | None:
    """What to tell the user when a short token guards an emulator others can reach."""
    if is_loopback(host) or len(token) >= MIN_EXPOSED_TOKEN_LENGTH:
        return None
    return (
        f"the emulator listens on {host or 'every interface'} (not loopback) with a "
        f"{len(token)}-character token: whoever reaches it can guess the token and run "
        f"commands in its sandboxes; use at least {MIN_EXPOSED_TOKEN_LENGTH} characters, or no "
        "token for a random one"
    )


class _DenialNoise(logging.Filter):
    """uvicorn logs an error after every refused WebSocket upgrade (our JSON 404 for an
    unknown path) although the refusal was sent; that line is not an error here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


_denial_noise = _DenialNoise()


def _version() -> str:
    return __version__


_Part = TypeVar("_Part")


def _started(part: _Part | None) -> _Part:
    """A part of the server that is None until it starts: the not-started error instead."""
    if part is None:
        raise EmulatorError("the emulator is not started")
    return part


class EmulatorServer:
    """The Northflank emulator on ``http://host:port``, serving from a background thread.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with EmulatorServer() as server:
            client = ApiClient(api_token=server.token, base_url=server.url)

    ``port=0`` picks a free port; ``token=None`` makes a random one. ``ready_delay`` is the
    time from create (or restart) to ``COMPLETED``. ``isolation`` chooses how sandboxes are
    isolated (``"auto"``: Linux namespaces when available, else per-sandbox directories).
    ``project_ids`` are the projects that exist; ``spot_only`` makes creates without a spot
    tag fail like a spot-only cluster; ``rate_limit_per_hour`` sets a quota (``None``: none);
    ``project_create_error`` makes project creation fail with that message (as on BYOC);
    ``require_existing_tags`` makes services name only tags that exist. ``state_dir`` holds
    the sandboxes (default: a temporary directory). ``images`` says where sandbox images
    come from (default: as ``NF_EMULATOR_IMAGES`` says, else pulled from their registries into
    the user's cache directory). Each sandbox gets its plan's memory and ``max_processes``
    processes (``None``: no limit), enforced by cgroups where writable, else by rlimits
    (``limits``: ``"auto"``, ``"cgroup"`` or ``"rlimit"``). The forwarding tunnel is
    served over TLS on a second port with a certificate made at start; ``ca_file`` receives
    its CA (PEM).

    Warns (:class:`EmulatorExposureWarning`) when ``host`` is not a loopback address and the
    token is shorter than :data:`MIN_EXPOSED_TOKEN_LENGTH` characters.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        ready_delay: float = 0.0,
        isolation: IsolationSetting = "auto",
        project_ids: Sequence[str] = ("default-project",),
        spot_only: bool = False,
        rate_limit_per_hour: int | None = None,
        project_create_error: str | None = None,
        require_existing_tags: bool = True,
        state_dir: Path | None = None,
        images: ImageOptions | None = None,
        max_processes: int | None = DEFAULT_MAX_PROCESSES,
        limits: LimitSetting = "auto",
        ca_file: Path | None = None,
    ) -> None:
        if isinstance(project_ids, str):
            raise EmulatorError("project_ids must be a sequence of ids, not one string")
        if not project_ids or not all(isinstance(p, str) and p for p in project_ids):
            raise EmulatorError(f"project_ids must be non-empty strings, got {project_ids!r}")
        if (
            isinstance(ready_delay, bool)
            or not isinstance(ready_delay, (int, float))
            or not math.isfinite(ready_delay)
            or ready_delay < 0
        ):
            raise EmulatorError(f"ready_delay must be a finite number >= 0, got {ready_delay!r}")
        if rate_limit_per_hour is not None and rate_limit_per_hour < 0:
            raise EmulatorError(f"rate_limit_per_hour must be >= 0, got {rate_limit_per_hour}")
        if token is not None and (not token or not token.isprintable() or " " in token):
            raise EmulatorError("token must be a non-empty printable string without spaces")
        self.host = host
        self.port = port
        self.token = token if token is not None else f"nf-emulator-{secrets.token_urlsafe(24)}"
        exposure = exposure_warning(host, self.token)
        if exposure is not None:
            warnings.warn(exposure, EmulatorExposureWarning, stacklevel=2)
        self.config = EmulatorConfig(
            project_ids=tuple(project_ids),
            ready_delay=float(ready_delay),
            spot_only=spot_only,
            rate_limit_per_hour=rate_limit_per_hour,
            project_create_error=project_create_error,
            require_existing_tags=require_existing_tags,
        )
        self._isolation_setting: IsolationSetting = isolation
        self._state_dir = state_dir
        self._image_options = images or options_from_environment()
        self._images: ImageProvider | None = None
        self._max_processes = max_processes
        self._limits_setting: LimitSetting = limits
        self._ca_file_target = ca_file
        self._tls: TlsFiles | None = None
        self._tls_server: uvicorn.Server | None = None
        self._tls_socket: socket.socket | None = None
        self._tunnel_domain: str | None = None
        self._runtime: ContainerRuntime | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._failure: BaseException | None = None
        self._url: str | None = None
        self._control: EmulatorControl | None = None
        self._state: EmulatorState | None = None

    def __repr__(self) -> str:
        where = self._url or "not started"
        return f"<EmulatorServer {where}>"

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what a started server offers ----------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (no trailing slash)."""
        return _started(self._url)

    @property
    def control(self) -> EmulatorControl:
        """The control plane (reset, state, faults) from Python."""
        return _started(self._control)

    @property
    def state(self) -> EmulatorState:
        """What the emulator remembers. Change it only while no request is being served (before
        the URL is handed out): the routes use it from the server's thread without locks."""
        return _started(self._state)

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM) that signed the tunnel endpoint's certificate."""
        return _started(self._tls).ca_file

    @property
    def tunnel_domain(self) -> str:
        """``HOST:PORT`` of the TLS endpoint serving the forwarding tunnel."""
        return _started(self._tunnel_domain)

    @property
    def runtime(self) -> ContainerRuntime:
        return _started(self._runtime)

    @property
    def isolation(self) -> IsolationMode:
        """``"namespace"`` or ``"directory"``: how this emulator isolates sandboxes."""
        return self.runtime.isolation

    @property
    def isolation_reason(self) -> str:
        """Why that isolation was chosen (for a report header)."""
        return self.runtime.isolation_reason

    @property
    def images(self) -> ImageProvider:
        """Where sandbox images come from, and which fell back to the host's userland."""
        return _started(self._images)

    def _release_images(self) -> None:
        images, self._images = self._images, None
        if images is not None and images.store is not None:
            images.store.cache.release()

    @property
    def limits_reason(self) -> str:
        """How each sandbox's memory and process count are limited (for a report header)."""
        return self.runtime.limits_reason

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> EmulatorServer:
        """Start serving; returns once the server accepts connections."""
        if self._thread is not None:
            raise EmulatorError("the emulator is already started")
        runtime = ContainerRuntime(
            self._isolation_setting,
            self._state_dir,
            max_processes=self._max_processes,
            limits=self._limits_setting,
        )
        try:
            self._images = build_provider(
                self._image_options, directory_mode=runtime.isolation != "namespace"
            )
            self._start_serving(runtime)
        except BaseException:
            self._stop_serving()
            runtime.shutdown()
            self._release_images()
            raise
        self._runtime = runtime
        return self

    def _start_serving(self, runtime: ContainerRuntime) -> None:
        try:
            # Re-wrapping the fd reads proto=IPPROTO_TCP back from the kernel; asyncio only sets
            # TCP_NODELAY on accepted sockets whose proto says TCP, and without it every
            # keep-alive response (headers and body written apart) stalls ~40 ms on delayed ACK.
            sock = socket.socket(fileno=socket.create_server((self.host, self.port)).detach())
        except OSError as exc:
            raise EmulatorError(f"cannot listen on {self.host}:{self.port}: {exc}") from None
        self._socket = sock
        host, port = sock.getsockname()[:2]
        self._tls = tls = make_tls_files()
        if self._ca_file_target is not None:
            write_ca_file(tls, self._ca_file_target)
        tunnel_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        try:
            tls_sock = socket.socket(fileno=socket.create_server((tunnel_host, 0)).detach())
        except OSError as exc:
            raise EmulatorError(f"cannot listen on {tunnel_host} for the tunnel: {exc}") from None
        self._tls_socket = tls_sock
        tunnel_port = tls_sock.getsockname()[1]
        shown = f"[{tunnel_host}]" if ":" in tunnel_host else tunnel_host
        self._tunnel_domain = f"{shown}:{tunnel_port}"
        state = EmulatorState(self.config)
        self._state = state
        ctx = EmulatorContext(
            state=state,
            deployments=Deployments(state, runtime, self._images),
            runtime=runtime,
            token=self.token,
            version=_version(),
            tunnel_domain=self._tunnel_domain,
        )
        app = create_app(ctx)
        config = uvicorn.Config(
            app,
            ws="websockets-sansio",
            lifespan="off",
            log_config=None,  # leave the host process's logging alone
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            ws_max_size=64 * 1024 * 1024,
        )
        logging.getLogger("uvicorn.error").addFilter(_denial_noise)
        server = uvicorn.Server(config)
        self._server = server
        # The same app over TLS: the official clients dial the tunnel as wss:// only.
        tls_server = uvicorn.Server(
            uvicorn.Config(
                app,
                ws="websockets-sansio",
                lifespan="off",
                log_config=None,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
                ssl_certfile=str(self._tls.cert_file),
                ssl_keyfile=str(self._tls.key_file),
            )
        )
        self._tls_server = tls_server
        self._thread = threading.Thread(
            target=self._serve,
            args=([(server, sock), (tls_server, tls_sock)],),
            name=f"nf-emulator-{port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not (server.started and tls_server.started):
            if not self._thread.is_alive():
                raise EmulatorError(f"the emulator server failed to start: {self._failure!r}")
            if time.monotonic() > deadline:
                raise EmulatorError(
                    f"the emulator server did not start within {START_TIMEOUT_SECONDS:g}s"
                )
            time.sleep(0.005)
        display_host = f"[{host}]" if ":" in host else host
        self._url = f"http://{display_host}:{port}"
        self.port = port
        self._control = EmulatorControl(self._url, self.token)

    def _serve(self, servers: list[tuple[uvicorn.Server, socket.socket]]) -> None:
        async def serve_all() -> None:
            try:
                await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in servers))
            finally:
                # Published ports are listeners on this loop: closed before it ends.
                state = self._state
                for service in list(state.services.values()) if state is not None else []:
                    instance = service.instance
                    if instance is not None and instance.published is not None:
                        await instance.published.close()

        try:
            asyncio.run(serve_all())
        except BaseException as exc:  # reported by start(), or ends the thread quietly on stop
            self._failure = exc

    def stop(self) -> None:
        """Stop serving, then stop every container (all processes die, disks are freed).

        Idempotent; joins the server thread."""
        self._stop_serving()
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.shutdown()
        self._release_images()
        self._control = None
        self._state = None

    def _stop_serving(self) -> None:
        server, thread = self._server, self._thread
        for running in (server, self._tls_server):
            if running is not None:
                running.should_exit = True
        if thread is not None:
            thread.join()
        for sock in (self._socket, self._tls_socket):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._socket = self._tls_socket = None
        self._server = self._tls_server = self._thread = None
        tls, self._tls = self._tls, None
        if tls is not None:
            tls.remove()
        self._tunnel_domain = None
