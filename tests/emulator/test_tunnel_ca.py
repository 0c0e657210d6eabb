"""The tunnel's TLS identity: a CA made at start, written by ``--ca-file`` and named by the
info file; the tunnel endpoint's certificate verifies against it and against nothing else."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_northflank.emulator import EmulatorServer
from pytest_northflank.emulator.info_file import read_info_file


def handshake(domain: str, context: ssl.SSLContext) -> None:
    host, _, port = domain.rpartition(":")
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host),
    ):
        pass


def test_the_tunnel_certificate_verifies_against_the_written_ca(tmp_path: Path) -> None:
    ca_file = tmp_path / "emulator-ca.pem"
    with EmulatorServer(
        isolation="directory", state_dir=tmp_path / "state", ca_file=ca_file
    ) as server:
        assert ca_file.read_bytes() == server.ca_file.read_bytes()
        assert ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
        handshake(server.tunnel_domain, ssl.create_default_context(cafile=str(ca_file)))
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(server.tunnel_domain, ssl.create_default_context())
        with EmulatorServer(isolation="directory", state_dir=tmp_path / "other") as other:
            other_ca = ssl.create_default_context(cafile=str(other.ca_file))
            with pytest.raises(ssl.SSLCertVerificationError):
                handshake(server.tunnel_domain, other_ca)  # each emulator its own CA
        private = server.ca_file.parent
    assert not private.exists()  # the key went with the server
    assert ca_file.exists()  # what the user asked for stays


def test_the_command_writes_the_ca_and_names_it_in_the_info_file(tmp_path: Path) -> None:
    info_path, ca_path = tmp_path / "info.json", tmp_path / "ca.pem"
    argv = [sys.executable, "-m", "pytest_northflank.emulator", "--isolation", "directory",
            "--state-dir", str(tmp_path / "state"), "--info-file", str(info_path),
            "--ca-file", str(ca_path)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "NORTHFLANK_EMULATOR_TOKEN"}
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()  # the banner comes after the info file
        info = read_info_file(info_path)
        assert info is not None
        assert info.ca_file == str(ca_path)
        ssl.create_default_context(cafile=info.ca_file)  # a loadable PEM
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
