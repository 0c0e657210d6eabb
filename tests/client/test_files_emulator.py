"""File and directory copy against the emulator's containers: exact bytes, modes, symlinks,
empty directories, path semantics and errors."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from client_helpers import PROJECT, unique_name
from file_trees import snapshot

from pytest_northflank.client import NorthflankClient, Service
from pytest_northflank.errors import FileTransferError


def make_tree(root: Path) -> None:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "empty" / "nested-empty").mkdir(parents=True)
    (root / "src" / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (root / "src" / "data.bin").write_bytes(os.urandom(200_000))
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "run.sh").chmod(0o755)
    (root / "secret.txt").write_text("s")
    (root / "secret.txt").chmod(0o600)
    (root / "name with spaces & 'quotes'.txt").write_text("odd")
    (root / "-starts-with-dash").write_text("dash")
    (root / "link").symlink_to("src/data.bin")
    (root / "dangling").symlink_to("nowhere")
    os.link(root / "src" / "data.bin", root / "hard.bin")


def remote_dir(name: str) -> str:
    """A fresh remote path, relative: it resolves in the container's working directory, which
    goes away with the sandbox whatever the emulator's isolation mode."""
    return unique_name(name)


def test_file_round_trip_is_exact_and_keeps_the_mode(
    nf: NorthflankClient, service: Service, tmp_path: Path
) -> None:
    source = tmp_path / "blob.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 1))
    source.chmod(0o640)
    top = f"/tmp/{unique_name('file')}"  # one absolute path, removed at the end
    remote = f"{top}/deep/er/copy.bin"
    nf.upload(PROJECT, service.id, source, remote)
    check = nf.run(PROJECT, service.id, ["stat", "-c", "%a %s", remote])
    assert check.stdout_text.split() == ["640", str(3 * 1024 * 1024 + 1)]
    back = tmp_path / "back.bin"
    nf.download(PROJECT, service.id, remote, back)
    assert back.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(back.stat().st_mode) == 0o640
    assert nf.run(PROJECT, service.id, ["rm", "-r", top]).ok


def test_empty_file(nf: NorthflankClient, service: Service, tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    remote = f"{remote_dir('empty')}/e"
    nf.upload(PROJECT, service.id, tmp_path / "empty", remote)
    nf.download(PROJECT, service.id, remote, tmp_path / "e2")
    assert (tmp_path / "e2").read_bytes() == b""


def test_file_into_an_existing_directory_keeps_its_name(
    nf: NorthflankClient, service: Service, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    target = remote_dir("into")
    nf.run(PROJECT, service.id, ["mkdir", "-p", target])
    nf.upload(PROJECT, service.id, tmp_path / "notes.txt", target)
    assert nf.run(PROJECT, service.id, ["cat", f"{target}/notes.txt"]).stdout == b"hello"
    local_dir = tmp_path / "downloads"
    local_dir.mkdir()
    nf.download(PROJECT, service.id, f"{target}/notes.txt", local_dir)
    assert (local_dir / "notes.txt").read_text() == "hello"


def test_directory_round_trip_keeps_the_tree(
    nf: NorthflankClient, service: Service, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    make_tree(tree)
    target = remote_dir("tree")
    nf.upload(PROJECT, service.id, tree, target)
    listing = nf.run(
        PROJECT,
        service.id,
        ["sh", "-c", f"cd {target} && stat -c '%a %F %n' run.sh link empty/nested-empty"],
    )
    assert listing.stdout_text.splitlines() == [
        "755 regular file run.sh",
        "777 symbolic link link",
        "755 directory empty/nested-empty",
    ]
    back = tmp_path / "back"
    nf.download(PROJECT, service.id, target, back)
    assert snapshot(back) == snapshot(tree)
    assert os.stat(back / "hard.bin").st_ino == os.stat(back / "src" / "data.bin").st_ino


def test_directory_upload_merges_into_an_existing_directory(
    nf: NorthflankClient, service: Service, tmp_path: Path
) -> None:
    target = remote_dir("merge")
    nf.run(PROJECT, service.id, f"mkdir -p {target} && echo old > {target}/kept.txt")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "new.txt").write_text("new")
    nf.upload(PROJECT, service.id, tmp_path / "d", target)
    listing = nf.run(PROJECT, service.id, ["ls", target]).stdout_text.split()
    assert listing == ["kept.txt", "new.txt"]


def test_many_small_files(nf: NorthflankClient, service: Service, tmp_path: Path) -> None:
    tree = tmp_path / "many"
    for i in range(300):
        sub = tree / f"d{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.py").write_text(f"x = {i}\n")
    target = remote_dir("many")
    nf.upload(PROJECT, service.id, tree, target)
    count = nf.run(PROJECT, service.id, f"find {target} -type f | wc -l")
    assert count.stdout_text.strip() == "300"
    nf.download(PROJECT, service.id, target, tmp_path / "many-back")
    assert snapshot(tmp_path / "many-back") == snapshot(tree)


def test_remote_path_missing(nf: NorthflankClient, service: Service, tmp_path: Path) -> None:
    with pytest.raises(FileTransferError, match=r":/no/such/path.*does not exist"):
        nf.download(PROJECT, service.id, "/no/such/path", tmp_path / "x")


def test_local_path_missing(nf: NorthflankClient, service: Service, tmp_path: Path) -> None:
    with pytest.raises(FileTransferError, match=r"local path .*nope does not exist"):
        nf.upload(PROJECT, service.id, tmp_path / "nope", "/tmp/x")


def test_directory_onto_a_remote_file(
    nf: NorthflankClient, service: Service, tmp_path: Path
) -> None:
    plain = remote_dir("plain-file")
    nf.run(PROJECT, service.id, f"echo x > {plain}")
    with pytest.raises(FileTransferError, match="remote path is a file"):
        nf.upload(PROJECT, service.id, tmp_path, plain)


def test_remote_write_failure_names_the_reason(
    nf: NorthflankClient, service: Service, tmp_path: Path
) -> None:
    (tmp_path / "f").write_text("x")
    # A file in the way of a directory the upload needs.
    in_the_way = remote_dir("in-the-way")
    nf.run(PROJECT, service.id, f"echo x > {in_the_way}")
    with pytest.raises(
        FileTransferError, match=r"in-the-way-\w+/sub/f failed: .*(Not a directory|File exists)"
    ):
        nf.upload(PROJECT, service.id, tmp_path / "f", f"{in_the_way}/sub/f")


def test_image_without_tar(
    nf: NorthflankClient, service_factory: Callable[..., Service], tmp_path: Path
) -> None:
    bare = f"/tmp/{unique_name('bare')}"
    no_tar = service_factory("c-notar", env={"PATH": bare}, command="/bin/sleep infinity")
    # A PATH holding only sh: the probe finds no tar.
    made = nf.run(
        PROJECT,
        no_tar.id,
        ["/bin/sh", "-c", f"/bin/mkdir -p {bare} && /bin/ln -s /bin/sh {bare}/sh"],
    )
    assert made.ok, made.stderr_text
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileTransferError, match="no `tar`"):
        nf.upload(PROJECT, no_tar.id, tmp_path / "f", f"{bare}/f")
    with pytest.raises(FileTransferError, match="no `tar`"):
        nf.download(PROJECT, no_tar.id, "/etc/hostname", tmp_path / "h")
    nf.run(PROJECT, no_tar.id, ["/bin/rm", "-rf", bare])


def test_special_local_file_stops_the_upload_cleanly(
    nf: NorthflankClient, service: Service, tmp_path: Path
) -> None:
    tree = tmp_path / "with-fifo"
    tree.mkdir()
    (tree / "a.txt").write_text("a")
    os.mkfifo(tree / "b-pipe")
    target = remote_dir("fifo")
    with pytest.raises(FileTransferError, match=r"b-pipe: it is a fifo"):
        nf.upload(PROJECT, service.id, tree, target)
    # The half-sent archive was abandoned, and the service still answers.
    assert nf.run(PROJECT, service.id, "true").ok
