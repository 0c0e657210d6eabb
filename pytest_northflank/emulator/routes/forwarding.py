"""Port forwarding as the official JS client and CLI speak it (contract section 6).

``GET /v1/port-forwarding/info/[teams/{t}/]projects/{p}/services/{s}`` answers the *bare*
object (no ``data`` envelope): ``{namespace, targetDomain, instances:[{podName}],
ports:[{internalPort, name, protocol}]}``. ``targetDomain`` is the emulator's TLS endpoint as
``127.0.0.1:PORT``; the clients always dial it as ``wss://``.

``/tunnel/[teams/{t}/]projects/{p}/services/{s}/instance/{pod}/port/{port}`` is one WebSocket
per TCP connection: ``Authorization: Bearer`` on the upgrade, no subprotocol, raw bytes in
binary frames both ways. The protocol has no half-close: the client closes the WebSocket when
its socket ends (the sandbox's connection then gets EOF and is closed), and the emulator closes
it (1000) once the sandbox's side ended. Refusals are JSON with a top-level
``message`` (what the JS client shows) as well as the usual ``error`` object.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from pytest_northflank.emulator.context import EmulatorContext, context_of
from pytest_northflank.emulator.deployments import current
from pytest_northflank.emulator.relay import CHUNK, connect_into, reachable
from pytest_northflank.emulator.state import CLUSTER, ServiceRecord
from pytest_northflank.errors import ApiError, EmulatorError

#: TCP only: the emulator has no UDP tunnel.
FORWARDED_PROTOCOLS = ("HTTP", "HTTP/2", "TCP")
TARGET = "projects/{projectId}/services/{serviceId}"


def _unavailable(ctx: EmulatorContext) -> None:
    why = reachable(ctx.runtime)
    if why is not None:
        raise ApiError(f"Port forwarding is not available: {why}", status=409)
    if ctx.tunnel_domain is None:
        raise ApiError("Port forwarding is not available: the tunnel endpoint is off", status=409)


async def forwarding_info(request: Request) -> Response:
    ctx = context_of(request)
    _unavailable(ctx)
    service = await current(
        ctx.state, request.path_params["projectId"], request.path_params["serviceId"]
    )
    instance = service.instance
    running = instance is not None and instance.container is not None and instance.is_running()
    return JSONResponse(
        {
            "namespace": CLUSTER["namespace"],
            "targetDomain": ctx.tunnel_domain,
            "instances": [{"podName": instance.name}] if running and instance else [],
            "ports": [
                {"internalPort": p["internalPort"], "name": p["name"], "protocol": p["protocol"]}
                for p in service.spec.ports
                if p.get("protocol") in FORWARDED_PROTOCOLS
            ],
        }
    )


async def _refuse(websocket: WebSocket, status: int, message: str) -> None:
    body = {"message": message, "error": {"status": status, "message": message}}
    await websocket.send_denial_response(JSONResponse(body, status))


def _bearer(websocket: WebSocket) -> str | None:
    scheme, _, token = (websocket.headers.get("authorization") or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def tunnel(websocket: WebSocket) -> None:
    ctx = context_of(websocket)
    params = websocket.path_params
    token = _bearer(websocket)
    if token is None:
        await _refuse(websocket, 401, "Missing API token: send 'Authorization: Bearer <token>'")
        return
    if not ctx.token_matches(token):
        await _refuse(websocket, 401, "Invalid API token")
        return
    try:
        _unavailable(ctx)
        service = ctx.state.service(params["projectId"], params["serviceId"])
        port = _forwarded_port(service, params["port"])
        instance = service.instance
        if instance is None or instance.container is None or instance.name != params["pod"]:
            raise ApiError(
                f"Instance {params['pod']!r} of service {service.id!r} is not running",
                status=404,
            )
        reader, writer = await connect_into(ctx.runtime, instance.container, port)
    except ApiError as exc:
        await _refuse(websocket, exc.status, exc.api_message)
        return
    except EmulatorError as exc:
        await _refuse(websocket, 502, str(exc))
        return
    await websocket.accept()  # no subprotocol: answering one breaks the official client
    try:
        await _carry(websocket, reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


def _forwarded_port(service: ServiceRecord, raw: str) -> int:
    for port in service.spec.ports:
        if str(port["internalPort"]) == raw and port.get("protocol") in FORWARDED_PROTOCOLS:
            return int(port["internalPort"])
    raise ApiError(f"Service {service.id!r} has no TCP or HTTP port {raw[:10]!r}", status=404)


async def _carry(
    websocket: WebSocket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Bytes both ways until either side ends; then close the other."""

    async def upstream() -> None:
        with contextlib.suppress(WebSocketDisconnect, ConnectionError, OSError):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if data is None:
                    data = (message.get("text") or "").encode()
                writer.write(data)
                await writer.drain()
        # The client's socket ended (it sends no half-close): end ours towards the sandbox.
        with contextlib.suppress(ConnectionError, OSError):
            if writer.can_write_eof():
                writer.write_eof()

    async def downstream() -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(CHUNK):
                await websocket.send_bytes(chunk)
        with contextlib.suppress(RuntimeError, ConnectionError, OSError):
            await websocket.close(1000)

    tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
    try:
        # The protocol has no half-close: either side ending ends the connection.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


ROUTES: list[BaseRoute] = [
    Route(f"/v1/port-forwarding/info/{TARGET}", forwarding_info, methods=["GET"]),
    Route(f"/v1/port-forwarding/info/teams/{{teamId}}/{TARGET}", forwarding_info, methods=["GET"]),
    WebSocketRoute(f"/tunnel/{TARGET}/instance/{{pod}}/port/{{port}}", tunnel),
    WebSocketRoute(f"/tunnel/teams/{{teamId}}/{TARGET}/instance/{{pod}}/port/{{port}}", tunnel),
]
