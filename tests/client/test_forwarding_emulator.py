"""Ports and port forwarding through our client against the emulator: ports in the create
payload, the public port's listener, the bare forwarding info, the TLS tunnel (one WebSocket
per connection, raw bytes, EOF both ways), refusals, and no thread left behind."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from client_helpers import PROJECT, start_service
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from pytest_northflank.client import NorthflankClient, Service
from pytest_northflank.errors import ConfigError, NetworkError

# Upper-cases what it gets; one thread per connection; sends "bye" after the peer's EOF.
ECHO = (
    'python3 -c "import socket, threading\n'
    "def serve(c):\n"
    "    while (d := c.recv(65536)):\n"
    "        c.sendall(d.upper())\n"
    "    c.sendall(b'bye'); c.close()\n"
    "s = socket.create_server(('127.0.0.1', 7000))\n"
    "while True:\n"
    '    threading.Thread(target=serve, args=(s.accept()[0],)).start()"'
)
WEB = (
    "sh -c 'mkdir -p /srv && cd /srv && echo $PAGE > index.html "
    "&& exec python3 -m http.server 8000'"
)


@pytest.fixture
def tls_client(emulator: Any) -> Iterator[NorthflankClient]:
    with NorthflankClient(emulator.token, base_url=emulator.url, ca_file=emulator.ca_file) as nf:
        yield nf


@pytest.fixture
def needs_network(emulator: Any) -> None:
    if emulator.isolation != "namespace":
        pytest.skip("the emulator runs in directory isolation: sandboxes have no network")


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def serving(nf: NorthflankClient, prefix: str, **spec: Any) -> Service:
    return start_service(nf, prefix, **spec)


def wait_listening(nf: NorthflankClient, service: Service, port: int) -> None:
    def up() -> bool:
        result = nf.run(PROJECT, service.id, ["python3", "-c", _CONNECT, str(port)])
        return result.exit_code == 0

    assert eventually(up), f"nothing listens on {port} in {service.id}"


_CONNECT = "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1]))).close()"


def read_all(sock: socket.socket) -> bytes:
    return b"".join(iter(lambda: sock.recv(65536), b""))


@pytest.mark.usefixtures("needs_network")
def test_raw_tcp_echo_through_forward(tls_client: NorthflankClient) -> None:
    service = serving(
        tls_client, "fwd-echo", command=ECHO, ports=[{"port": 7000, "protocol": "TCP"}]
    )
    try:
        assert [(p.name, p.internal_port, p.protocol, p.public) for p in service.ports] == [
            ("p7000", 7000, "TCP", False)
        ]
        wait_listening(tls_client, service, 7000)
        host, port = tls_client.forward(PROJECT, service.id, 7000)
        assert host == "127.0.0.1"
        assert tls_client.forward(PROJECT, service.id, 7000) == (host, port)  # the same listener
        # Two connections at once, each its own tunnel; big payloads cross intact.
        first, second = (socket.create_connection((host, port)) for _ in range(2))
        with first, second:
            payload = bytes(range(97, 123)) * 40_000
            first.sendall(b"one")
            second.sendall(b"two")
            assert first.recv(3) == b"ONE"
            assert second.recv(3) == b"TWO"
            first.sendall(payload)
            received = b""
            while len(received) < len(payload):
                received += first.recv(65536)
            assert received == payload.upper()
        # The remote end finishing reaches the local client as EOF.
        with socket.create_connection((host, port)) as third:
            third.sendall(b"x")
            assert third.recv(1) == b"X"
            third.shutdown(socket.SHUT_WR)  # no half-close in the protocol: the tunnel closes
            assert read_all(third) in (b"", b"bye")
        assert tls_client.forward_error(PROJECT, service.id, 7000) is None
    finally:
        tls_client.stop_forwarding(PROJECT, service.id)
        tls_client.delete_service(PROJECT, service.id)


@pytest.mark.usefixtures("needs_network")
def test_two_public_ports_8000_each_get_their_own_listener(tls_client: NorthflankClient) -> None:
    services = [
        serving(
            tls_client,
            f"web-{page}",
            command=WEB,
            env={"PAGE": page},
            ports=[{"port": 8000, "public": True}],
        )
        for page in ("first", "second")
    ]
    try:
        for service, page in zip(services, ("first", "second"), strict=True):
            wait_listening(tls_client, service, 8000)
            (port,) = tls_client.get_service(PROJECT, service.id).ports
            assert port.dns is not None
            assert port.dns.startswith("127.0.0.1:")
            assert port.dns.rsplit(":", 1)[1] != "8000"
            assert httpx.get(f"http://{port.dns}/index.html").text == f"{page}\n"
            # The bare info object the official clients read, without the data envelope.
            info = tls_client.forwarding_info(PROJECT, service.id)
            assert info.raw.keys() == {"namespace", "targetDomain", "instances", "ports"}
            assert [p.internal_port for p in info.ports] == [8000]
            assert len(info.pods) == 1
    finally:
        for service in services:
            tls_client.delete_service(PROJECT, service.id)


@pytest.mark.usefixtures("needs_network")
def test_the_tunnel_refuses_what_it_must(emulator: Any, tls_client: NorthflankClient) -> None:
    service = serving(tls_client, "fwd-refuse", ports=[{"port": 7000, "protocol": "TCP"}])
    try:
        info = tls_client.forwarding_info(PROJECT, service.id)
        base = f"wss://{info.target_domain}/tunnel/projects/{PROJECT}/services/{service.id}"
        context = ssl.create_default_context(cafile=str(emulator.ca_file))
        cases = [
            (f"{base}/instance/{info.pods[0]}/port/7000", "wrong-token", 401),
            (f"{base}/instance/{info.pods[0]}/port/7001", emulator.token, 404),
            (f"{base}/instance/not-a-pod/port/7000", emulator.token, 404),
            (f"{base}/instance/{info.pods[0]}/port/7000", emulator.token, 502),  # nothing listens
        ]
        for url, token, status in cases:
            headers = {"Authorization": f"Bearer {token}"}
            with pytest.raises(InvalidStatus) as refused:
                connect(url, ssl=context, additional_headers=headers).close()
            assert refused.value.response.status_code == status, url
            assert b'"message"' in refused.value.response.body
        with pytest.raises(NetworkError, match="no forwardable port 9"):
            tls_client.forward(PROJECT, service.id, 9)
        # A tunnel that cannot be opened is reported, and the local connection just closes.
        host, port = tls_client.forward(PROJECT, service.id, 7000)
        with socket.create_connection((host, port)) as sock:
            assert read_all(sock) == b""
        assert eventually(lambda: tls_client.forward_error(PROJECT, service.id, 7000) is not None)
        assert "HTTP 502" in str(tls_client.forward_error(PROJECT, service.id, 7000))
    finally:
        tls_client.delete_service(PROJECT, service.id)


@pytest.mark.usefixtures("needs_network")
def test_an_untrusted_certificate_is_not_accepted(
    emulator: Any, tls_client: NorthflankClient
) -> None:
    service = serving(
        tls_client, "fwd-tls", command=ECHO, ports=[{"port": 7000, "protocol": "TCP"}]
    )
    try:
        wait_listening(tls_client, service, 7000)
        with NorthflankClient(emulator.token, base_url=emulator.url) as untrusting:
            host, port = untrusting.forward(PROJECT, service.id, 7000)
            with socket.create_connection((host, port)) as sock:
                assert read_all(sock) == b""
            assert eventually(
                lambda: untrusting.forward_error(PROJECT, service.id, 7000) is not None
            )
            assert "CERTIFICATE_VERIFY_FAILED" in str(
                untrusting.forward_error(PROJECT, service.id, 7000)
            )
    finally:
        tls_client.delete_service(PROJECT, service.id)


def test_forwarding_leaves_no_thread_behind(emulator: Any) -> None:
    before = set(threading.enumerate())
    client = NorthflankClient(emulator.token, base_url=emulator.url, ca_file=emulator.ca_file)
    if emulator.isolation == "namespace":
        service = serving(
            client, "fwd-threads", command=ECHO, ports=[{"port": 7000, "protocol": "TCP"}]
        )
        wait_listening(client, service, 7000)
        host, port = client.forward(PROJECT, service.id, 7000)
        with socket.create_connection((host, port)) as sock:
            sock.sendall(b"hi")
            assert sock.recv(2) == b"HI"
            open_connection = socket.create_connection((host, port))  # left open on purpose
        client.delete_service(PROJECT, service.id)
    client.close()
    assert set(threading.enumerate()) <= before
    if emulator.isolation == "namespace":
        assert read_all(open_connection) in (b"", b"bye")  # closed by the client's close()
        open_connection.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, port), timeout=2)


def test_directory_isolation_refuses_forwarding_clearly(emulator: Any) -> None:
    if emulator.isolation != "directory":
        pytest.skip("this emulator has a network (namespace isolation)")
    with NorthflankClient(emulator.token, base_url=emulator.url) as client:
        service = serving(client, "fwd-dir", ports=[8000])
        try:
            with pytest.raises(NetworkError, match=r"directory isolation.*share this machine"):
                client.forwarding_info(PROJECT, service.id)
        finally:
            client.delete_service(PROJECT, service.id)


def test_a_bad_ca_file_is_a_config_error(emulator: Any, tmp_path: Any) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot read the CA file"):
        NorthflankClient(emulator.token, base_url=emulator.url, ca_file=tmp_path / "ca.pem")


@pytest.mark.usefixtures("needs_network")
def test_a_sandbox_cannot_reach_the_emulator_api(
    emulator: Any, tls_client: NorthflankClient
) -> None:
    service = serving(tls_client, "fwd-api")
    try:
        api = httpx.URL(emulator.url)
        tunnel_host, tunnel_port = tls_client.forwarding_info(
            PROJECT, service.id
        ).target_domain.rsplit(":", 1)
        for host, port in ((api.host, api.port), (tunnel_host, int(tunnel_port))):
            probe = (
                "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)"
            )
            result = tls_client.run(
                PROJECT, service.id, ["python3", "-c", probe, str(host), str(port)]
            )
            assert result.exit_code != 0, (host, port)
            assert b"ConnectionRefusedError" in result.stderr, result.stderr
        # The same sandbox reaches the outside of nothing: no route at all.
        result = tls_client.run(PROJECT, service.id, ["python3", "-c", probe, "192.0.2.1", "80"])
        assert b"Network is unreachable" in result.stderr, result.stderr
    finally:
        tls_client.delete_service(PROJECT, service.id)
