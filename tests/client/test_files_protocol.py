"""File-copy error paths that a healthy emulator container cannot produce (it runs as root and
has tar): a scripted exec server answers the probe and the tar stream as told, and the client
must name the path and the reason."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from pytest_northflank.client import NorthflankClient
from pytest_northflank.client.files import PROBE_SCRIPT
from pytest_northflank.errors import FileTransferError, UnsafeArchiveError

TOKEN = "files-secret-token"
P, S = "proj", "svc"
# argv -> (exit code, stdout, stderr)
Answer = Callable[[list[str], bytes], tuple[int, bytes, bytes]]


class FakeContainer:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.commands: list[list[str]] = []
        self._server: Server = serve(self._handle, "127.0.0.1", 0)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, ws: ServerConnection) -> None:
        try:
            init = json.loads(ws.recv())
            argv = init["data"]["context"]["command"]
            self.commands.append(argv)
            ws.send(json.dumps({"type": "init", "data": {"auth": "successful"}}))
            stdin = b""
            for raw in ws:
                frame = json.loads(raw)
                if frame["type"] == "payload":
                    stdin += base64.b64decode(frame["data"])
                elif frame["type"] == "stdInEnd":
                    break
            code, out, err = self.answer(argv, stdin)
            for stream, data in (("stdOut", out), ("stdErr", err)):
                for i in range(0, len(data), 30000):
                    chunk = base64.b64encode(data[i : i + 30000]).decode()
                    ws.send(json.dumps({"type": stream, "data": chunk}))
            status = "Success" if code == 0 else "Failure"
            ws.send(
                json.dumps({"type": "completion", "data": {"exitCode": code, "status": status}})
            )
            ws.close()
        except ConnectionClosed:
            pass

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join()


@pytest.fixture
def container_answers() -> dict[str, Answer]:
    return {}


@pytest.fixture
def fake(container_answers: dict[str, Answer]) -> Iterator[FakeContainer]:
    def answer(argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
        kind = "probe" if PROBE_SCRIPT in argv else argv[0] if argv[0] == "tar" else "upload"
        return container_answers[kind](argv, stdin)

    container = FakeContainer(answer)
    yield container
    container.close()


@pytest.fixture
def client(fake: FakeContainer) -> Iterator[NorthflankClient]:
    with NorthflankClient(TOKEN, base_url=f"http://127.0.0.1:{fake.port}") as nf:
        yield nf


def probe_exits(code: int, stderr: bytes = b"") -> Answer:
    return lambda argv, stdin: (code, b"", stderr)


def test_no_tar_in_the_image(
    client: NorthflankClient, container_answers: dict[str, Answer], tmp_path: Path
) -> None:
    container_answers["probe"] = probe_exits(127)
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileTransferError, match=r"upload of .*f to svc:/dst.*no `tar`"):
        client.upload(P, S, tmp_path / "f", "/dst")
    with pytest.raises(FileTransferError, match=r"download of svc:/src.*no `tar`"):
        client.download(P, S, "/src", tmp_path / "out")


def test_remote_path_not_found(
    client: NorthflankClient, container_answers: dict[str, Answer], tmp_path: Path
) -> None:
    container_answers["probe"] = probe_exits(2)
    with pytest.raises(FileTransferError, match=r"svc:/no/such.*does not exist"):
        client.download(P, S, "/no/such", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("code", [12, 13])
def test_remote_path_unreadable(
    client: NorthflankClient, container_answers: dict[str, Answer], tmp_path: Path, code: int
) -> None:
    container_answers["probe"] = probe_exits(code)
    with pytest.raises(FileTransferError, match=r"svc:/root/secret.*permission denied"):
        client.download(P, S, "/root/secret", tmp_path / "out")


def test_remote_permission_denied_while_extracting(
    client: NorthflankClient, container_answers: dict[str, Answer], tmp_path: Path
) -> None:
    container_answers["probe"] = probe_exits(2)
    container_answers["upload"] = lambda argv, stdin: (
        2,
        b"",
        b"tar: ./f: Cannot open: Permission denied\ntar: Exiting with failure status\n",
    )
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileTransferError, match=r"upload of .* failed: permission denied \(tar: "):
        client.upload(P, S, tmp_path / "f", "/etc/locked/f")


def test_remote_tar_failure_before_any_output_is_reported_as_such(
    client: NorthflankClient, container_answers: dict[str, Answer], tmp_path: Path
) -> None:
    container_answers["probe"] = probe_exits(10)
    container_answers["tar"] = lambda argv, stdin: (
        2,
        b"",
        b"tar: /srv: Cannot open: Permission denied\n",
    )
    with pytest.raises(FileTransferError, match=r"svc:/srv.* failed: permission denied"):
        client.download(P, S, "/srv", tmp_path / "out")


def test_local_path_missing(client: NorthflankClient, fake: FakeContainer, tmp_path: Path) -> None:
    with pytest.raises(FileTransferError, match=r"local path .*missing does not exist"):
        client.upload(P, S, tmp_path / "missing", "/dst")
    assert fake.commands == []  # refused before any round trip


def test_directory_onto_a_remote_file_is_refused(
    client: NorthflankClient, container_answers: dict[str, Answer], tmp_path: Path
) -> None:
    container_answers["probe"] = probe_exits(11)
    with pytest.raises(FileTransferError, match="remote path is a file"):
        client.upload(P, S, tmp_path, "/etc/hostname")


def test_malicious_download_is_refused_and_nothing_escapes(
    client: NorthflankClient, container_answers: dict[str, Answer], tmp_path: Path
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    container_answers["probe"] = probe_exits(10)
    container_answers["tar"] = lambda argv, stdin: (0, buffer.getvalue(), b"")
    with pytest.raises(UnsafeArchiveError, match=r"\.\."):
        client.download(P, S, "/srv", tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_upload_sends_the_expected_commands(
    client: NorthflankClient,
    fake: FakeContainer,
    container_answers: dict[str, Answer],
    tmp_path: Path,
) -> None:
    received: list[bytes] = []

    def extract(argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
        received.append(stdin)
        return 0, b"", b""

    container_answers["probe"] = probe_exits(2)
    container_answers["upload"] = extract
    (tmp_path / "a.txt").write_text("hello")
    client.upload(P, S, tmp_path / "a.txt", "/remote/dir/b.txt")
    probe, upload = fake.commands
    assert probe == ["sh", "-c", PROBE_SCRIPT, "sh", "/remote/dir/b.txt"]
    assert upload[:2] == ["sh", "-c"]
    assert upload[-2:] == ["sh", "/remote/dir"]
    with tarfile.open(fileobj=io.BytesIO(received[0])) as tar:
        member = tar.next()
        assert member is not None
        assert member.name == "b.txt"
        data = tar.extractfile(member)
        assert data is not None
        assert data.read() == b"hello"
