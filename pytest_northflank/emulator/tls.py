"""The TLS identity of the emulator's tunnel endpoint, made at start.

The official clients dial the forwarding tunnel as ``wss://`` whatever the API URL says, so the
emulator serves it over TLS with a certificate for ``127.0.0.1`` and ``localhost`` signed by a
CA made for this emulator alone (trustme). Clients trust that CA through ``ca_file``
(``NODE_EXTRA_CA_CERTS`` for node); nothing is added to the machine's trust store.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trustme

from pytest_northflank.errors import EmulatorError


@dataclass(frozen=True)
class TlsFiles:
    """PEM files in a private directory (0700; removed by :meth:`remove`)."""

    directory: Path
    ca_file: Path  #: the CA certificate clients must trust
    cert_file: Path  #: the server certificate chain
    key_file: Path  #: its private key (0600)

    @property
    def ca_pem(self) -> bytes:
        return self.ca_file.read_bytes()

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def make_tls_files() -> TlsFiles:
    """A fresh CA and a server certificate for ``127.0.0.1``, ``::1`` and ``localhost``."""
    ca = trustme.CA(organization_name="pytest-northflank emulator")
    cert = ca.issue_cert("127.0.0.1", "::1", "localhost")
    directory = Path(tempfile.mkdtemp(prefix="pytest-northflank-tls-"))
    try:
        files = TlsFiles(
            directory, directory / "ca.pem", directory / "server.pem", directory / "server.key"
        )
        ca.cert_pem.write_to_path(str(files.ca_file))
        cert.private_key_pem.write_to_path(str(files.key_file))
        os.chmod(files.key_file, 0o600)
        with open(files.cert_file, "wb") as chain:
            for blob in cert.cert_chain_pems:
                chain.write(blob.bytes())
    except OSError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise EmulatorError(f"could not write the tunnel's TLS files: {exc}") from exc
    return files


def write_ca_file(files: TlsFiles, path: Path) -> None:
    """Copy the CA certificate to ``path`` (0644: a certificate is public)."""
    try:
        path.write_bytes(files.ca_pem)
    except OSError as exc:
        raise EmulatorError(f"could not write the CA certificate to {path}: {exc}") from exc
