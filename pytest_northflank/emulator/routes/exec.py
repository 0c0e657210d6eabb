"""The exec WebSocket (contract sections 3 and 8): run a command in a service's container or a
running job's.

(About 520 lines: the frame protocol, its error cases and the two kinds of target, services and
job runs, read best together.)

One connection runs one command. The client's first frame is ``init`` (token and context);
the answer is an ``init`` ack, then ``stdOut``/``stdErr`` frames while ``payload``,
``stdInEnd`` and ``resize`` frames from the client are applied strictly in order; the last
frame is ``completion`` and the socket closes with 1000. Every refusal is an ``error`` frame
followed by a close, never a hang. A client that leaves kills the command.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import contextlib
import grp
import os
import pwd
import shlex
from dataclasses import dataclass
from typing import Any, Literal

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from pytest_northflank.emulator.context import EmulatorContext, context_of
from pytest_northflank.emulator.deployments import current
from pytest_northflank.emulator.routes.ws_common import (
    CLOSE_DROPPED,
    CLOSE_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    ClientGone,
    FrameError,
    FrameSender,
    handshake,
    receive_frame,
)
from pytest_northflank.emulator.runtime import (
    CommandNotFound,
    CommandNotRunnable,
    Container,
    ExecProcess,
)
from pytest_northflank.errors import EmulatorError, NotFoundError

Encoding = Literal["utf-8", "base64"]
#: Shells tried, in order, for an interactive session that names none.
DEFAULT_SHELLS = ("bash", "sh")
#: Once the command has exited, output still arriving is forwarded until the streams have been
#: quiet this long (a background process may hold them open for ever).
DRAIN_QUIET_SECONDS = 0.3
CONTEXT_TYPES: dict[str, tuple[type, ...]] = {
    "command": (str, list),
    "shell": (str,),
    "encoding": (str,),
    "tty": (bool,),
    "ttyRows": (int,),
    "ttyColumns": (int,),
    "instanceName": (str,),
    "containerName": (str,),
    "user": (str, int),
    "group": (str, int),
}

# Client frames read ahead of the command's stdin (a few MiB at the usual frame sizes).
INBOX_FRAMES = 32


class ExecRefused(Exception):
    """The exec request is malformed; the message goes to the client in an ``error`` frame."""


class TargetUnavailable(Exception):
    """The request is fine but its target cannot run it (paused, not running, unknown)."""


@dataclass
class ExecRequest:
    """A validated ``init`` context."""

    argv: list[str]
    interactive_fallback: bool  # no shell was named: try the next default shell if missing
    encoding: Encoding
    tty: bool
    rows: int
    columns: int
    instance_name: str | None
    container_name: str | None


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def parse_exec_context(context: Any) -> ExecRequest:
    """Turn the ``init`` context into an argv and options; :class:`ExecRefused` says why not.

    ``shell``: ``"none"`` or missing runs ``command`` directly (an argv list, or a string split
    like a shell would); ``"X -c"`` (several words) runs ``[X, -c, command]``; a single word
    (``"bash"``) runs ``[shell, command]``, which makes bash read the command string as a
    script path, as the real proxy does. No command at all gives an interactive shell.
    """
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise ExecRefused(f"init data.context must be an object, got {_type_name(context)}")
    for key, value in context.items():
        allowed = CONTEXT_TYPES.get(key)
        if allowed is None:
            continue  # fields a newer client may send
        if value is None:
            raise ExecRefused(f"init context field {key!r} must not be null; omit it instead")
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            names = " or ".join("integer" if t is int else t.__name__ for t in allowed)
            raise ExecRefused(
                f"init context field {key!r} must be {names}, got {_type_name(value)}"
            )
    command: str | list[str] | None = context.get("command")
    if isinstance(command, list):
        if not all(isinstance(arg, str) for arg in command):
            raise ExecRefused("init context field 'command' must be a string or a list of strings")
        if command and not command[0]:
            raise ExecRefused("init context field 'command' starts with an empty program name")
    shell = (context.get("shell") or "none").strip()
    encoding = context.get("encoding", "utf-8")
    if encoding not in ("utf-8", "base64"):
        raise ExecRefused(
            f"init context field 'encoding' must be utf-8 or base64, got {encoding!r}"
        )
    rows, columns = context.get("ttyRows", 24), context.get("ttyColumns", 80)
    for name, value in (("ttyRows", rows), ("ttyColumns", columns)):
        if not 1 <= value <= 65535:
            raise ExecRefused(f"init context field {name!r} must be from 1 to 65535, got {value}")
    _check_identity(context.get("user"), "user")
    _check_identity(context.get("group"), "group")

    fallback = False
    if not command:
        if shell == "none":
            argv, fallback = [DEFAULT_SHELLS[0]], True
        else:
            argv = _split(shell, "shell")
    elif shell == "none":
        argv = list(command) if isinstance(command, list) else _split(command, "command")
    else:
        prefix = _split(shell, "shell")
        if len(prefix) > 1:
            text = command if isinstance(command, str) else shlex.join(command)
            argv = [*prefix, text]
        else:
            argv = [*prefix, *([command] if isinstance(command, str) else command)]
    return ExecRequest(
        argv=argv,
        interactive_fallback=fallback,
        encoding=encoding,
        tty=context.get("tty", False),
        rows=rows,
        columns=columns,
        instance_name=context.get("instanceName"),
        container_name=context.get("containerName"),
    )


def _split(text: str, field: str) -> list[str]:
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ExecRefused(f"init context field {field!r} cannot be split: {exc}") from None
    if not words:
        raise ExecRefused(f"init context field {field!r} is empty")
    return words


def _check_identity(value: str | int | None, kind: str) -> None:
    """Commands run as the emulator's own user: accept only that user (or group)."""
    if value is None:
        return
    if kind == "user":
        own_id = os.geteuid()
        own_name = pwd.getpwuid(own_id).pw_name
    else:
        own_id = os.getegid()
        own_name = grp.getgrgid(own_id).gr_name
    if value in (own_id, own_name, str(own_id)):
        return
    raise ExecRefused(
        f"the emulator runs commands as {kind} {own_name!r} ({own_id}); {kind} {value!r} is "
        "not available"
    )


def encode_output(data: str | bytes, encoding: Encoding) -> str:
    if encoding == "base64":
        assert isinstance(data, bytes)
        return base64.b64encode(data).decode("ascii")
    assert isinstance(data, str)
    return data


def decode_payload(data: Any, encoding: Encoding, position: int) -> bytes:
    """One ``payload`` frame's bytes; each frame is decoded on its own."""
    if not isinstance(data, str):
        raise FrameError(f"payload frame {position}: data must be a string, got {_type_name(data)}")
    if encoding == "utf-8":
        return data.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FrameError(f"payload frame {position} is not valid base64: {exc}") from None


@dataclass
class ExecTarget:
    """The container an exec runs in: its instance (pod) name and container name."""

    instance: str
    name: str
    container: Container


class ExecSession:
    """One exec connection, from handshake to completion."""

    def __init__(self, ctx: EmulatorContext, websocket: WebSocket) -> None:
        self.ctx = ctx
        self.websocket = websocket
        self.sender = FrameSender(websocket)
        self.client_gone = asyncio.Event()
        self.final_error: tuple[str, int] | None = None  # sent once the command is stopped
        self.output_frames = 0
        self.drop_after: int | None = None

    async def run(self) -> None:
        init = await handshake(self.websocket, self.sender, self.ctx)
        if init is None:
            return
        try:
            request = parse_exec_context(init.get("context"))
            target = await self._target(request)
        except ExecRefused as exc:
            await self.sender.error(str(exc), CLOSE_POLICY)
            return
        except TargetUnavailable as exc:
            await self.sender.error(str(exc))
            return
        except (NotFoundError, EmulatorError) as exc:
            await self.sender.error(str(getattr(exc, "api_message", exc)))
            return
        ack = {
            "type": "init",
            "data": {
                "auth": "successful",
                "context": {"instanceName": target.instance, "containerName": target.name},
            },
        }
        drop = self.ctx.state.faults.exec_drop
        if drop is not None and drop.remaining > 0:
            drop.remaining -= 1
            self.drop_after = drop.after_frames
            if self.drop_after == 0:
                await self.sender.send(ack)
                await self._drop()
                return
        try:
            process = await self._start(request, target.container)
        except CommandNotRunnable as exc:
            # What a shell prints and returns when a program cannot be run.
            await self.sender.send(ack)
            message = f"{exc}\n"
            data = message.encode() if request.encoding == "base64" else message
            await self._send_output("stderr", data, request.encoding)
            await self._complete(exc.exit_code)
            return
        except EmulatorError as exc:
            await self.sender.error(f"the command could not be started: {exc}")
            return
        # The ack goes once the command runs: a client may count on it being there.
        await self.sender.send(ack)
        await self._supervise(process, request)

    async def _target(self, request: ExecRequest) -> ExecTarget:
        params = self.websocket.path_params
        if params["segment"] == "jobs":
            return self._job_target(request)
        if params["segment"] != "services":
            raise TargetUnavailable(
                f"exec into {params['segment']} is not available on the emulator (services and "
                "jobs only)"
            )
        project_id, service_id = params["projectId"], params["serviceId"]
        service = await current(self.ctx.state, project_id, service_id)
        where = f"service {service_id!r} in project {project_id!r}"
        if service.paused:
            raise TargetUnavailable(f"Cannot exec into {where}: the service is paused")
        if service.paused or not self.ctx.state.accepts_exec(service):
            detail = f"deployment status {service.status}"
            if service.status_message:
                detail += f": {service.status_message}"
            elif service.status == "COMPLETED":
                detail = "its main process has exited"
            raise TargetUnavailable(f"Cannot exec into {where}: no running instance ({detail})")
        instance = service.instance
        assert instance is not None
        if request.instance_name is not None and request.instance_name != instance.name:
            raise TargetUnavailable(
                f"Instance {request.instance_name!r} not found for {where} (running: "
                f"{instance.name!r})"
            )
        if request.container_name is not None and request.container_name != service.id:
            raise TargetUnavailable(
                f"Container {request.container_name!r} not found in instance {instance.name!r} "
                f"(its container is {service.id!r})"
            )
        assert instance.container is not None
        return ExecTarget(instance.name, service.id, instance.container)

    def _job_target(self, request: ExecRequest) -> ExecTarget:
        """A running container of the job's runs (newest first, or ``instanceName``)."""
        params = self.websocket.path_params
        project_id, job_id = params["projectId"], params["serviceId"]
        job = self.ctx.jobs.job(project_id, job_id)
        where = f"job {job_id!r} in project {project_id!r}"
        running = self.ctx.jobs.running_attempts(job)
        if request.instance_name is not None:
            running = [a for a in running if a.name == request.instance_name]
        if not running:
            which = f"container {request.instance_name!r}" if request.instance_name else "no run"
            raise TargetUnavailable(f"Cannot exec into {where}: {which} is running")
        if request.container_name is not None and request.container_name != job.id:
            raise TargetUnavailable(
                f"Container {request.container_name!r} not found in {running[0].name!r} "
                f"(its container is {job.id!r})"
            )
        container = running[0].container
        assert container is not None
        return ExecTarget(running[0].name, job.id, container)

    async def _start(self, request: ExecRequest, container: Container) -> ExecProcess:
        candidates = [request.argv]
        if request.interactive_fallback:
            candidates = [[shell] for shell in DEFAULT_SHELLS]
        for position, argv in enumerate(candidates):
            try:
                return await container.exec(
                    argv, tty=request.tty, rows=request.rows, columns=request.columns
                )
            except CommandNotFound:
                if position == len(candidates) - 1:
                    raise
        raise AssertionError("unreachable")

    async def _supervise(self, process: ExecProcess, request: ExecRequest) -> None:
        # Bounded: a client uploading faster than the command reads waits (TCP backpressure)
        # instead of the emulator buffering the whole upload in memory.
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=INBOX_FRAMES)
        receiver = asyncio.create_task(self._receive(inbox))
        writer = asyncio.create_task(self._apply_input(inbox, process, request))
        pump = asyncio.create_task(self._pump(process, request.encoding))
        exited = asyncio.create_task(process.wait())
        gone = asyncio.create_task(self.client_gone.wait())
        try:
            await asyncio.wait({exited, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():  # the client left, broke the protocol, or a drop fault fired
                process.kill()
                return
            await self._drain(pump)
            if self.client_gone.is_set():
                return
            await self._complete(exited.result())
        except Exception as exc:  # a broken output pipe, or a bug: say so, don't hang
            self._fail(f"the emulator failed while running the command: {exc!r}", CLOSE_ERROR)
            raise
        finally:
            for task in (receiver, writer, pump, exited, gone):
                task.cancel()
            await asyncio.gather(receiver, writer, pump, exited, gone, return_exceptions=True)
            process.kill()
            process.close()
            if self.final_error is not None:
                await self.sender.error(*self.final_error)
            await self.sender.close(CLOSE_NORMAL)

    async def _receive(self, inbox: asyncio.Queue[dict[str, Any]]) -> None:
        """Read client frames as they come (so a client that leaves is noticed at once)."""
        while True:
            try:
                frame = await receive_frame(self.websocket)
            except ClientGone:
                self.sender.closed = True
                self.client_gone.set()
                return
            except FrameError as exc:
                self._fail(str(exc))
                return
            await inbox.put(frame)

    async def _apply_input(
        self, inbox: asyncio.Queue[dict[str, Any]], process: ExecProcess, request: ExecRequest
    ) -> None:
        """Apply payload/stdInEnd/resize frames strictly in the order they arrived."""
        payloads = 0
        while True:
            frame = await inbox.get()
            kind = frame.get("type")
            try:
                if kind == "payload":
                    payloads += 1
                    await process.write(
                        decode_payload(frame.get("data"), request.encoding, payloads)
                    )
                elif kind == "stdInEnd":
                    await process.close_stdin()
                elif kind == "resize":
                    data = frame.get("data")
                    rows = data.get("ttyRows") if isinstance(data, dict) else None
                    columns = data.get("ttyColumns") if isinstance(data, dict) else None
                    try:
                        process.resize(rows, columns)  # type: ignore[arg-type]
                    except EmulatorError:
                        raise FrameError(
                            "resize frame needs data.ttyRows and data.ttyColumns as integers "
                            f"from 1 to 65535, got {rows!r} and {columns!r}"
                        ) from None
                elif kind == "init":
                    raise FrameError("a second init frame was sent")
                else:
                    raise FrameError(
                        f"unknown frame type {kind!r} (expected payload, stdInEnd or resize)"
                    )
            except FrameError as exc:
                self._fail(str(exc))
                return

    def _fail(self, message: str, code: int = CLOSE_POLICY) -> None:
        """End the command like a client that left, then send ``message`` and close."""
        if self.final_error is None:
            self.final_error = (message, code)
        self.client_gone.set()

    async def _pump(self, process: ExecProcess, encoding: Encoding) -> None:
        decoders = {
            stream: codecs.getincrementaldecoder("utf-8")("replace")
            for stream in ("stdout", "stderr")
        }
        async for stream, chunk in process.output():
            if encoding == "utf-8":
                text = decoders[stream].decode(chunk)
                if text and not await self._send_output(stream, text, encoding):
                    return
            elif not await self._send_output(stream, chunk, encoding):
                return
        if encoding == "utf-8":
            for name, decoder in decoders.items():
                rest = decoder.decode(b"", final=True)
                if rest:
                    await self._send_output(name, rest, encoding)

    async def _send_output(self, stream: str, data: str | bytes, encoding: Encoding) -> bool:
        if self.drop_after is not None and self.output_frames >= self.drop_after:
            await self._drop()
            return False
        kind = "stdOut" if stream == "stdout" else "stdErr"
        sent = await self.sender.send({"type": kind, "data": encode_output(data, encoding)})
        if not sent:
            self.client_gone.set()
            return False
        self.output_frames += 1
        return True

    async def _drain(self, pump: asyncio.Task[None]) -> None:
        """The command exited: forward its remaining output until the streams end or stay
        quiet for :data:`DRAIN_QUIET_SECONDS`."""
        while not pump.done():
            seen = self.output_frames
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(pump), DRAIN_QUIET_SECONDS)
            if self.output_frames == seen and not self.sender.lock.locked():
                break
        if pump.done() and not pump.cancelled():
            pump.result()  # re-raises a failure of the output pump

    async def _complete(self, exit_code: int) -> None:
        if self.drop_after is not None:
            await self._drop()  # a dropped connection never reports completion
            return
        faults = self.ctx.state.faults
        status = "Success" if exit_code == 0 else "Failure"
        await self.sender.send(
            {
                "type": "completion",
                "data": {
                    "exitCode": str(exit_code) if faults.exit_code_as_string else exit_code,
                    "status": status,
                    "message": f"Command exited with code {exit_code}",
                },
            }
        )
        await self.sender.close(CLOSE_NORMAL)

    async def _drop(self) -> None:
        self.client_gone.set()
        await self.sender.close(CLOSE_DROPPED, "connection dropped (emulator fault injection)")


async def exec_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    await ExecSession(context_of(websocket), websocket).run()


EXEC_TARGET = "projects/{projectId}/{segment}/{serviceId}"
ROUTES: list[BaseRoute] = [
    WebSocketRoute(f"/v1/command-exec/{EXEC_TARGET}", exec_endpoint),
    WebSocketRoute(f"/v1/command-exec/teams/{{teamId}}/{EXEC_TARGET}", exec_endpoint),
]
