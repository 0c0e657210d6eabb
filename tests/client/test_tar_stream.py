"""Streaming tar packing: chunking, GNU tar interop, and a lossless round trip."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from file_trees import snapshot

from pytest_northflank.client.tarstream import ChunkWriter, extract_file, extract_tree, pack
from pytest_northflank.errors import FileTransferError


def make_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "sub" / "data.bin").write_bytes(os.urandom(70_000))
    (root / "script.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "script.sh").chmod(0o750)
    (root / "readonly.txt").write_text("ro")
    (root / "readonly.txt").chmod(0o444)
    (root / "sub" / "deeper" / ("long-name-" * 20)).write_text("long")
    (root / "unicode-é.txt").write_text("é")
    (root / "link-to-data").symlink_to("sub/data.bin")
    (root / "dangling").symlink_to("does/not/exist")
    os.link(root / "sub" / "data.bin", root / "hardlink.bin")
    (root / "sub").chmod(0o700)
    (root / "locked").mkdir()
    (root / "locked" / "inside.txt").write_text("inside a read-only directory")
    (root / "locked").chmod(0o555)


def packed(source: Path, arcname: str, chunk: int = 192 * 1024) -> tuple[bytes, list[int]]:
    chunks: list[bytes] = []
    writer = ChunkWriter(chunks.append, chunk)
    pack(source, arcname, writer)
    writer.close()
    return b"".join(chunks), [len(c) for c in chunks]


def test_chunk_writer_emits_exact_sizes() -> None:
    out: list[bytes] = []
    writer = ChunkWriter(out.append, 6)
    for piece in (b"ab", b"cdefgh", b"", b"ijklmnopqrstu"):
        writer.write(piece)
    writer.close()
    assert out == [b"abcdef", b"ghijkl", b"mnopqr", b"stu"]
    assert writer.total == 21


def test_chunks_are_multiples_of_three_except_the_last(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    data, sizes = packed(tmp_path / "src", ".", chunk=3 * 1000)
    assert all(size == 3000 for size in sizes[:-1])
    assert len(data) % tarfile.RECORDSIZE == 0


def test_round_trip_keeps_modes_symlinks_hardlinks_and_empty_dirs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    data, _ = packed(src, ".")
    out = tmp_path / "out"
    stats = extract_tree(io.BytesIO(data), out)
    assert snapshot(out) == snapshot(src)
    assert os.stat(out / "hardlink.bin").st_ino == os.stat(out / "sub" / "data.bin").st_ino
    assert stats.hardlinks == 1
    assert int(os.stat(out / "script.sh").st_mtime) == int(os.stat(src / "script.sh").st_mtime)


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
def test_gnu_tar_extracts_what_we_pack(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    data, _ = packed(src, ".")
    out = tmp_path / "gnu"
    out.mkdir()
    subprocess.run(["tar", "-xpf", "-", "--no-same-owner", "-C", str(out)], input=data, check=True)
    assert snapshot(out) == snapshot(src)


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
def test_we_extract_what_gnu_tar_packs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    data = subprocess.run(["tar", "-cf", "-", "-C", str(src), "."], capture_output=True, check=True)
    out = tmp_path / "ours"
    extract_tree(io.BytesIO(data.stdout), out)
    assert snapshot(out) == snapshot(src)


def test_single_file_packs_under_its_new_name_and_extracts_to_a_path(tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(os.urandom(1000))
    source.chmod(0o600)
    data, _ = packed(source, "renamed.bin")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["renamed.bin"]
    dest = tmp_path / "deep" / "copy.bin"
    extract_file(io.BytesIO(data), dest)
    assert dest.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


def test_special_files_are_refused_when_packing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")
    with pytest.raises(FileTransferError, match=r"pipe: it is a fifo"):
        packed(src, ".")


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileTransferError, match="missing"):
        packed(tmp_path / "missing", ".")


def test_setuid_bits_are_dropped_on_extraction(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("suid")
        info.mode = 0o4755
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    buffer.seek(0)
    extract_tree(buffer, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out" / "suid").stat().st_mode) == 0o755
