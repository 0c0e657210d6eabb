"""Opening the API's WebSockets (exec and log tail) for one API base and token: the URL,
handshake retries, proxy lookup and a logger that never records the token."""

from __future__ import annotations

import inspect
import logging
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

import websockets.exceptions as ws_errors
from websockets.sync.client import ClientConnection, connect

from pytest_northflank.client.arguments import check_ids, check_terminal_size, describe_argv
from pytest_northflank.client.exec_session import ExecSession
from pytest_northflank.client.frames import build_exec_context, encode_exec_init
from pytest_northflank.client.rest import RestTransport, api_error, quote
from pytest_northflank.errors import TransportError

__all__ = ["ExecConnector"]

# Largest server message accepted; the contract says servers keep frames to tens of KiB.
_MAX_MESSAGE = 16 * 1024 * 1024
_HANDSHAKE_ATTEMPTS = 3
_HANDSHAKE_DELAY = 0.5
_RETRYABLE_UPGRADE = (502, 503, 504)
_CONNECT_TAKES_PROXY = "proxy" in inspect.signature(connect).parameters
# websockets logs every frame, init (with the API token) included, at DEBUG. Its records go
# to this logger, held at INFO so that a DEBUG root logger (pytest --log-level=DEBUG) can
# never capture a token.
_WS_LOGGER = logging.getLogger("pytest_northflank.client.websockets")
_WS_LOGGER.setLevel(logging.INFO)


def _http_to_ws(base_url: str) -> str:
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://") :]
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://") :]
    raise ValueError(f"base_url must be http(s), got {base_url!r}")


class ExecConnector:
    """Opens exec (and log-tail) WebSockets for one API base and token."""

    def __init__(
        self, rest: RestTransport, *, team_id: str | None, open_timeout: float = 30.0
    ) -> None:
        self._rest = rest
        self.team_id = team_id
        self.open_timeout = open_timeout
        self.ws_base = _http_to_ws(rest.base_url)
        # websockets >= 15 looks proxies up in the environment on every connect (a scan of all
        # variables); the answer does not change, so look once.
        self._options: dict[str, Any] = {}
        if _CONNECT_TAKES_PROXY and not urllib.request.getproxies():
            self._options["proxy"] = None

    def __repr__(self) -> str:
        return f"ExecConnector(ws_base={self.ws_base!r}, team_id={self.team_id!r})"

    def exec_path(self, project_id: str, service_id: str) -> str:
        """``/v1/command-exec/[teams/{t}/]projects/{p}/services/{s}`` (team segment inside)."""
        check_ids(project_id=project_id, service_id=service_id)
        team = f"/teams/{quote(self.team_id)}" if self.team_id else ""
        return f"/v1/command-exec{team}/projects/{quote(project_id)}/services/{quote(service_id)}"

    def connect(self, path: str, *, what: str = "exec") -> ClientConnection:
        """Open a WebSocket to ``path``, retrying only the opening handshake (nothing has been
        sent yet, so a retry cannot run anything twice)."""
        url = self.ws_base + path
        for attempt in range(_HANDSHAKE_ATTEMPTS):
            last = attempt == _HANDSHAKE_ATTEMPTS - 1
            try:
                conn: ClientConnection = connect(
                    url,
                    open_timeout=self.open_timeout,
                    close_timeout=5,
                    compression=None,  # base64 payloads: deflate costs CPU for ~25%
                    max_size=_MAX_MESSAGE,
                    user_agent_header=self._rest.user_agent,
                    logger=_WS_LOGGER,
                    **self._options,
                )
                # Entering marks the connection as managed (websockets >= 17.1 warns about
                # bare connect() otherwise); callers close it explicitly.
                return conn.__enter__()
            except ws_errors.InvalidStatus as exc:
                status = exc.response.status_code
                if status in _RETRYABLE_UPGRADE and not last:
                    time.sleep(_HANDSHAKE_DELAY * (attempt + 1))
                    continue
                raise api_error(
                    status,
                    bytes(exc.response.body or b""),
                    method="GET",
                    path=path,
                    scrub=self._rest.scrub,
                    reason=f"{what} WebSocket upgrade rejected: {exc.response.reason_phrase}",
                ) from None
            except (TimeoutError, OSError, ws_errors.InvalidHandshake) as exc:
                if last:
                    raise TransportError(
                        f"{what} WebSocket {url} could not be opened after "
                        f"{_HANDSHAKE_ATTEMPTS} attempts: {type(exc).__name__}: "
                        f"{self._rest.scrub(str(exc))}"
                    ) from None
                time.sleep(_HANDSHAKE_DELAY * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def start(
        self,
        project_id: str,
        service_id: str,
        argv: Sequence[str],
        *,
        tty: bool = False,
        rows: int | None = None,
        columns: int | None = None,
        wait_for_init: bool = True,
        description: str | None = None,
    ) -> ExecSession:
        """Connect, send ``init`` and return the session (after the server's init when
        ``wait_for_init``; a one-shot run skips the wait and pipelines stdin behind init)."""
        __tracebackhide__ = True  # pytest would print argv, which may carry env values
        if tty:
            check_terminal_size(24 if rows is None else rows, 80 if columns is None else columns)
        started = time.monotonic()
        conn = self.connect(self.exec_path(project_id, service_id))
        context = build_exec_context(
            list(argv),
            shell="none",
            encoding="base64",
            tty=tty,
            tty_rows=rows if tty else None,
            tty_columns=columns if tty else None,
        )
        session = ExecSession(
            conn,
            description=description or describe_argv(argv),
            started=started,
            scrub=self._rest.scrub,
        )
        try:
            conn.send(encode_exec_init(self._rest.token, context))
            if wait_for_init:
                session.wait_for_init(self.open_timeout)
        except BaseException:
            session.close()
            raise
        return session
