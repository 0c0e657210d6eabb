"""The Northflank API client: REST on one pooled ``httpx.Client``, commands and file copy over
the exec WebSocket, logs. Knows nothing about pytest.

::

    with NorthflankClient(token, base_url=url) as nf:
        service = nf.create_deployment_service("default-project", DeploymentServiceSpec(
            name="my sandbox", command="sleep infinity"))
        nf.wait_for_service_ready("default-project", service.id)
        print(nf.run("default-project", service.id, "uname -a").stdout_text)

Every failure is a :class:`pytest_northflank.errors.NorthflankError`; the token never
appears in a repr, message or log record.

Modules: ``api`` (the client class), ``rest`` (HTTP transport), ``connector`` (opening
WebSockets), ``exec_session`` (a streaming command), ``exec`` (one-shot runs), ``frames``
(wire framing), ``files`` and ``tarstream`` (file copy), ``logs``, ``models``, ``arguments``
(argument checks), ``ports`` (port specs), ``forwarding`` (the tunnel, natively).
"""

from __future__ import annotations

from pytest_northflank.client.api import DEFAULT_BASE_URL, NorthflankClient
from pytest_northflank.client.exec_session import (
    ExecOutput,
    ExecResult,
    ExecSession,
    ExecSessionInfo,
)
from pytest_northflank.client.files import TransferStats
from pytest_northflank.client.logs import LogTail
from pytest_northflank.client.models import (
    ContainerInfo,
    DeploymentServiceSpec,
    DeploymentStatus,
    ForwardingInfo,
    LogLine,
    Project,
    RateLimitStatus,
    Service,
    ServicePort,
    ServiceSummary,
    Tag,
)
from pytest_northflank.client.ports import PortSpec, check_ports

__all__ = [
    "DEFAULT_BASE_URL",
    "ContainerInfo",
    "DeploymentServiceSpec",
    "DeploymentStatus",
    "ExecOutput",
    "ExecResult",
    "ExecSession",
    "ExecSessionInfo",
    "ForwardingInfo",
    "LogLine",
    "LogTail",
    "NorthflankClient",
    "PortSpec",
    "Project",
    "RateLimitStatus",
    "Service",
    "ServicePort",
    "ServiceSummary",
    "Tag",
    "TransferStats",
    "check_ports",
]
