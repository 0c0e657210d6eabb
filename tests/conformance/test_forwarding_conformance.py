"""Ports and port forwarding with the official CLI (``@northflank/cli`` 0.9.24) and JS client
(``@northflank/js-client``), unmodified, against the emulator: ports created, listed and
patched; ``forwarding.forwardService`` and ``northflank forward service --skipHostnames``
carrying bytes to a sandbox port through the TLS tunnel (``NODE_EXTRA_CA_CERTS``).

The packages live in ``.cache/npm-conformance`` (``.ci/run`` installs them; another folder
with ``NF_NPM_CONFORMANCE_DIR``). Without node or the packages these tests skip, saying why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from sdk_testing import PROJECT, deployment, unique_name

from pytest_northflank.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parents[2]
NODE_TIMEOUT = 120
INSTALL = "npm install --prefix .cache/npm-conformance @northflank/cli@0.9.24 @northflank/js-client"
# Reverses what it reads (one connection at a time), on the sandbox's loopback only.
REVERSE = (
    'python3 -c "import socket\n'
    "s = socket.create_server(('127.0.0.1', 7000))\n"
    "while True:\n"
    "    c = s.accept()[0]\n"
    '    c.sendall(c.recv(100)[::-1]); c.close()"'
)


# Ports through the JS client: create, list, replace (ids kept), patch, a refused public TCP.
PORTS_JS = """
  const create = JSON.parse(process.env.NF_CREATE);
  const s = (await api.create.service.deployment({parameters: {projectId: P}, data: create})).data;
  const at = {projectId: P, serviceId: s.id};
  const listed = (await api.get.service.ports({parameters: at})).data;
  const kept = listed.ports.map((p) => ({
    id: p.id, name: p.name, internalPort: p.internalPort, protocol: p.protocol, public: p.public,
  }));
  const db = {name: 'db', internalPort: 5432, protocol: 'TCP'};
  await api.update.service.ports({parameters: at, data: {ports: [...kept, db]}});
  const updated = (await api.get.service.ports({parameters: at})).data;
  const patch = {ports: [{...db, internalPort: 5433}]};
  const patched = (await api.patch.service.deployment({parameters: at, data: patch})).data;
  let refused = null;
  try {
    await api.update.service.ports({parameters: at, data: {ports: [{...db, public: true}]}});
  } catch (e) { refused = e.status; }
  await api.delete.service({parameters: at});
  return {listed: listed.ports, updated: updated.ports, patched: patched.ports, refused};
"""

# forwardService (ipOnly), then two connections through its local listener.
FORWARD_JS = """
  const net = require('net');
  const at = {projectId: P, serviceId: process.env.NF_SERVICE};
  const forwarded = await api.forwarding.forwardService(at, true);
  const {address, port} = forwarded[0].data;
  const answers = [];
  for (const word of ['stressed', 'drawer']) {
    answers.push(await new Promise((resolve, reject) => {
      const chunks = [];
      const sock = net.connect(port, address, () => sock.write(word));
      sock.on('data', (c) => chunks.push(c));
      sock.on('end', () => resolve(Buffer.concat(chunks).toString()));
      sock.on('error', reject);
    }));
  }
  await api.forwarding.stopServiceForwarding(at);
  return {address, port, answers};
"""


def package_or_skip(name: str) -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the official CLI and JS client need it")
    folder = Path(os.environ.get("NF_NPM_CONFORMANCE_DIR") or ROOT / ".cache" / "npm-conformance")
    path = folder / "node_modules" / "@northflank" / name
    if not (path / "package.json").is_file():
        pytest.skip(f"@northflank/{name} is not installed in {folder}: {INSTALL} (.ci/run does)")
    return path


@pytest.fixture(scope="module")
def network(emulator: EmulatorServer) -> EmulatorServer:
    if emulator.isolation != "namespace":
        pytest.skip("the emulator runs in directory isolation: sandboxes have no network")
    return emulator


@pytest.fixture
def http(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {emulator.token}"}
    with httpx.Client(base_url=emulator.url, headers=headers, timeout=30) as client:
        yield client


def wait_ready(http: httpx.Client, service_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        data = http.get(f"/v1/projects/{PROJECT}/services/{service_id}").json()["data"]
        if data["status"]["deployment"]["status"] == "COMPLETED":
            return
        time.sleep(0.05)
    pytest.fail(f"{service_id} did not become ready")


@pytest.fixture
def reverser(network: EmulatorServer, http: httpx.Client) -> Iterator[str]:
    """A running service whose TCP port 7000 answers with what it got, reversed."""
    body = deployment(unique_name("fwd"), REVERSE)
    body["ports"] = [{"name": "rev", "internalPort": 7000, "protocol": "TCP"}]
    service_id = str(
        http.post(f"/v1/projects/{PROJECT}/services/deployment", json=body).json()["data"]["id"]
    )
    wait_ready(http, service_id)
    yield service_id
    http.delete(f"/v1/projects/{PROJECT}/services/{service_id}")


def node_env(server: EmulatorServer, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NO_COLOR": "1",
        "FORCE_COLOR": "0",
        "NODE_EXTRA_CA_CERTS": str(server.ca_file),
        "NF_HOST": server.url,
        "NF_TOKEN": server.token,
        **extra,
    }


def run_js(server: EmulatorServer, body: str, **env: str) -> Any:
    """Run ``body`` inside an async function with ``api`` (throwing on errors) and ``P``; it
    returns a JSON value, printed by node and returned here."""
    package = package_or_skip("js-client")
    script = (
        f"const nf = require({json.dumps(str(package))});\n"
        "(async () => {\n"
        "  const context = new nf.ApiClientInMemoryContextProvider();\n"
        "  await context.addContext({name: 'emu', token: process.env.NF_TOKEN, "
        "host: process.env.NF_HOST});\n"
        "  const api = new nf.ApiClient(context, {throwErrorOnHttpErrorCode: true});\n"
        f"  const P = {json.dumps(PROJECT)};\n"
        f"  const out = await (async () => {{ {body} }})();\n"
        "  console.log(JSON.stringify(out));\n"
        "  process.exit(0);\n"
        "})().catch((e) => { console.error(e); process.exit(1); });\n"
    )
    done = subprocess.run(
        ["node", "-e", script],
        env=node_env(server, **env),
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"node exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli_home(server: EmulatorServer, home: Path) -> Path:
    """A HOME whose CLI config has one context on the emulator (no update check)."""
    (home / ".northflank").mkdir(parents=True)
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    context = {"name": "emu", "token": server.token, "host": server.url}
    config = {"contexts": [context], "current": "emu", "lastUpdateCheck": now}
    path = home / ".northflank" / "config.json"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return home


def cli_argv(*args: str) -> list[str]:
    return ["node", str(package_or_skip("cli") / "dist" / "cli.js"), *args]


def run_cli(server: EmulatorServer, home: Path, *args: str) -> str:
    done = subprocess.run(
        cli_argv(*args),
        env=node_env(server, HOME=str(home)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"northflank {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    assert "Failed" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done.stdout


def exchange(host: str, port: int, data: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(data)
        return b"".join(iter(lambda: sock.recv(4096), b""))


def test_js_client_creates_lists_and_patches_ports(network: EmulatorServer) -> None:
    name = unique_name("js-ports")
    create = json.dumps(
        deployment(name)
        | {"ports": [{"name": "web", "internalPort": 8080, "protocol": "HTTP", "public": True}]}
    )
    result = run_js(network, PORTS_JS, NF_CREATE=create)
    (web,) = result["listed"]
    assert (web["id"], web["name"], web["internalPort"], web["public"]) == (
        "web",
        "web",
        8080,
        True,
    )
    assert [(p["id"], p["internalPort"]) for p in result["updated"]] == [
        ("web", 8080),
        ("db", 5432),
    ]
    assert [(p["name"], p["internalPort"], p["protocol"]) for p in result["patched"]] == [
        ("db", 5433, "TCP")
    ]
    assert result["refused"] == 400


def test_cli_lists_updates_and_patches_ports(
    network: EmulatorServer, reverser: str, http: httpx.Client, tmp_path: Path
) -> None:
    home = cli_home(network, tmp_path / "home")
    where = ("--project", PROJECT, "--service", reverser)
    listed = json.loads(run_cli(network, home, "get", "service", "ports", *where, "-o", "json"))
    assert [(p["name"], p["internalPort"]) for p in listed["ports"]] == [("rev", 7000)]
    ports = [
        *listed["ports"],
        {"name": "web", "internalPort": 8000, "protocol": "HTTP", "public": True},
    ]
    kept = [
        {k: p[k] for k in ("id", "name", "internalPort", "protocol", "public") if k in p}
        for p in ports
    ]
    run_cli(
        network, home, "update", "service", "ports", *where, "--input", json.dumps({"ports": kept})
    )
    wait_ready(http, reverser)
    after = http.get(f"/v1/projects/{PROJECT}/services/{reverser}/ports").json()["data"]["ports"]
    assert [(p["id"], p["internalPort"]) for p in after] == [("rev", 7000), ("web", 8000)]
    assert after[1]["dns"].startswith("127.0.0.1:")  # its listener on this machine
    patch = {"ports": [{"name": "rev", "internalPort": 7000, "protocol": "TCP"}]}
    printed = run_cli(
        network, home, "patch", "service", "deployment", *where, "--input", json.dumps(patch)
    )
    assert "rev" in printed
    wait_ready(http, reverser)
    after = http.get(f"/v1/projects/{PROJECT}/services/{reverser}/ports").json()["data"]["ports"]
    assert [p["internalPort"] for p in after] == [7000]


def test_js_client_forwarding_carries_bytes(network: EmulatorServer, reverser: str) -> None:
    result = run_js(network, FORWARD_JS, NF_SERVICE=reverser)
    assert re.fullmatch(r"127\.24\.\d+\.\d+", result["address"])
    assert result["port"] == 7000  # the internal port: nothing of ours holds it on 0.0.0.0
    assert result["answers"] == ["desserts", "reward"]


def test_cli_forward_service_carries_bytes(
    network: EmulatorServer, reverser: str, tmp_path: Path
) -> None:
    home = cli_home(network, tmp_path / "home")
    argv = cli_argv(
        "forward", "service", "--projectId", PROJECT, "--serviceId", reverser, "--skipHostnames"
    )
    process = subprocess.Popen(
        argv,
        env=node_env(network, HOME=str(home)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        seen = ""
        while (found := re.search(r"(127\.24\.\d+\.\d+):(\d+)", seen)) is None:
            line = process.stdout.readline()
            assert line, f"the CLI ended without forwarding:\n{seen}"
            seen += line
        host, port = found[1], int(found[2])
        assert port == 7000
        assert exchange(host, port, b"stressed") == b"desserts"
        assert exchange(host, port, b"live") == b"evil"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            assert process.stdout is not None
            process.stdout.close()
