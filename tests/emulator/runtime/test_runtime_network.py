"""The emulator's private network, at the runtime level: each namespace sandbox has its own
network namespace (own loopback, one interface on a private bridge), names resolve through its
hosts file, nothing of the host's loopback is reachable, and the host's own network namespace
gets nothing new."""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from emulator_testing import eventually
from runtime_testing import needs_namespaces, sh

from pytest_northflank.emulator.runtime import Container, ContainerRuntime

pytestmark = needs_namespaces

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
    print("connected")
except OSError as exc:
    print("refused", type(exc).__name__)
"""

SERVE = "import http.server as h; h.test(h.SimpleHTTPRequestHandler, port=8000, bind='{bind}')"
FETCH = "import urllib.request, sys; print(urllib.request.urlopen(sys.argv[1], timeout=5).read())"


def host_interfaces() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return sorted(line.split(":")[1].strip() for line in out.stdout.splitlines())


def host_addresses() -> list[str]:
    out = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True)
    return sorted(out.stdout.splitlines())


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[ContainerRuntime]:
    runtime = ContainerRuntime("namespace", state_dir=tmp_path / "state")
    try:
        yield runtime
    finally:
        runtime.shutdown()


def serve(runtime: ContainerRuntime, name: str, bind: str, page: str) -> Container:
    script = f"cd /srv 2>/dev/null || mkdir -p /srv && cd /srv; echo {page} > index.html; "
    script += f'exec python3 -c "{SERVE.format(bind=bind)}"'
    container = runtime.start(
        f"{name}-{uuid.uuid4().hex[:6]}", ["sh", "-c", script], {}, names=(name,)
    )
    assert eventually(
        lambda: b"connected" in sh(container, f"python3 -c '{CONNECT}' 127.0.0.1 8000").stdout
    )
    return container


def test_two_sandboxes_serve_the_same_port_and_reach_each_other_by_name(
    runtime: ContainerRuntime,
) -> None:
    interfaces, addresses = host_interfaces(), host_addresses()
    alpha = serve(runtime, "alpha", "0.0.0.0", "from-alpha")
    beta = serve(runtime, "beta", "0.0.0.0", "from-beta")
    client = runtime.start(f"client-{uuid.uuid4().hex[:6]}", ["sleep", "infinity"], {})
    for name, page in (("alpha", b"from-alpha"), ("beta", b"from-beta")):
        result = sh(client, f"python3 -c '{FETCH}' http://{name}:8000/index.html")
        assert page in result.stdout, result.stderr
    # Each has its own loopback with its own port 8000.
    assert (
        b"from-alpha" in sh(alpha, f"python3 -c '{FETCH}' http://127.0.0.1:8000/index.html").stdout
    )
    assert b"from-beta" in sh(beta, f"python3 -c '{FETCH}' http://localhost:8000/index.html").stdout
    hosts = sh(client, "cat /etc/hosts").stdout.decode()
    assert alpha.network is not None
    assert beta.network is not None
    assert f"{alpha.network.address}\t" in hosts
    assert "alpha" in hosts
    assert sh(client, "ip -o link | wc -l").stdout.strip() == b"2"  # lo and eth0
    # The host's own network namespace got nothing: no interface, no address.
    assert host_interfaces() == interfaces
    assert host_addresses() == addresses


def test_a_sandbox_reaches_neither_another_loopback_nor_the_host(
    runtime: ContainerRuntime,
) -> None:
    private = serve(runtime, "private", "127.0.0.1", "secret")
    assert private.network is not None
    with socket.create_server(("127.0.0.1", 0)) as host_listener:
        host_port = host_listener.getsockname()[1]
        intruder = runtime.start(f"intruder-{uuid.uuid4().hex[:6]}", ["sleep", "infinity"], {})
        for target, port in (
            ("private", 8000),  # bound to its own loopback only
            (private.network.address, 8000),
            ("127.0.0.1", 8000),  # its own loopback: nothing there
            ("127.0.0.1", host_port),  # the host's loopback service
            ("10.0.2.2", host_port),
        ):
            out = sh(intruder, f"python3 -c '{CONNECT}' {target} {port}").stdout
            assert out.startswith(b"refused"), (target, port, out)
    # The owner itself reaches its loopback server.
    assert b"secret" in sh(private, f"python3 -c '{FETCH}' http://127.0.0.1:8000/index.html").stdout


def test_the_runtime_connects_inside_a_sandbox_and_leaves_no_network_behind(
    runtime: ContainerRuntime,
) -> None:
    container = serve(runtime, "inside", "127.0.0.1", "hello-inside")
    assert runtime.network is not None
    assert container.network is not None
    sock = runtime.network.socket_in(container.network)
    sock.setblocking(True)
    with sock:
        sock.connect(("127.0.0.1", 8000))
        sock.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        assert b"hello-inside" in b"".join(iter(lambda: sock.recv(4096), b""))
    hosts_file = container.network.hosts_file
    container.stop(grace=0)
    assert container.network.closed
    assert not hosts_file.exists()


def test_directory_isolation_has_no_network() -> None:
    with ContainerRuntime("directory") as runtime:
        assert runtime.network is None
        container = runtime.start(f"dir-{uuid.uuid4().hex[:6]}", ["sleep", "infinity"], {})
        assert container.network is None
