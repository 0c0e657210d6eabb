"""Safe extraction: every way an archive could write outside its target is refused."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from pytest_northflank.client.tarstream import extract_file, extract_tree
from pytest_northflank.errors import FileTransferError, UnsafeArchiveError
from pytest_northflank.tarsafety import member_parts

Member = tuple[str, str, bytes | str]  # (kind, name, data or link target)


def archive(*members: Member) -> io.BytesIO:
    """A tar built in memory: kind is file, dir, symlink, hardlink, chr, blk or fifo."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            if kind == "file":
                assert isinstance(payload, bytes)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, str(payload)
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "blk":
                info.type, info.devmajor, info.devminor = tarfile.BLKTYPE, 8, 0
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tar.addfile(info)
    buffer.seek(0)
    return buffer


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "target"


def nothing_outside(tmp_path: Path, target: Path) -> bool:
    return sorted(p.name for p in tmp_path.iterdir()) == ["target"]


def test_absolute_path_is_refused(tmp_path: Path, target: Path) -> None:
    evil = tmp_path / "evil.txt"
    with pytest.raises(UnsafeArchiveError, match="absolute path"):
        extract_tree(archive(("file", str(evil), b"x")), target)
    assert not evil.exists()


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "./../evil.txt", ".."])
def test_dot_dot_is_refused(tmp_path: Path, target: Path, name: str) -> None:
    with pytest.raises(UnsafeArchiveError, match=r"'\.\.'"):
        extract_tree(archive(("file", name, b"x")), target)
    assert nothing_outside(tmp_path, target)


def test_symlink_to_absolute_path_is_refused(target: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="absolute path '/etc'"):
        extract_tree(archive(("symlink", "etc", "/etc")), target)
    assert not (target / "etc").is_symlink()


def test_symlink_climbing_out_is_refused(target: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="points outside"):
        extract_tree(archive(("dir", "sub", b""), ("symlink", "sub/up", "../../x")), target)


def test_symlink_chain_resolving_outside_is_refused(target: Path) -> None:
    # Each link looks harmless alone: ``a -> .`` stays inside, and ``b -> a/..`` normalises to
    # ``.``; followed for real, b is the parent of the target.
    with pytest.raises(UnsafeArchiveError, match="resolves outside"):
        extract_tree(archive(("symlink", "a", "."), ("symlink", "b", "a/..")), target)
    assert not (target / "b").is_symlink()


def test_link_through_a_preexisting_outside_symlink_is_refused(
    tmp_path: Path, target: Path
) -> None:
    target.mkdir()
    (target / "mine").symlink_to(tmp_path)  # the user's own link, pointing out
    with pytest.raises(UnsafeArchiveError, match="resolves outside"):
        extract_tree(archive(("symlink", "x", "mine")), target)


def test_writing_through_an_archive_symlink_is_refused(tmp_path: Path, target: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    # The link itself points inside, but a later member writes through it.
    with pytest.raises(UnsafeArchiveError, match="through the symlink"):
        extract_tree(
            archive(("dir", "real", b""), ("symlink", "link", "real"), ("file", "link/f", b"x")),
            target,
        )


def test_writing_through_a_symlink_replacing_a_directory_is_refused(target: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="through the symlink"):
        extract_tree(
            archive(("symlink", "d", "."), ("file", "d/f", b"x")),
            target,
        )


def test_hardlink_to_outside_is_refused(tmp_path: Path, target: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s")
    with pytest.raises(UnsafeArchiveError, match="absolute path"):
        extract_tree(archive(("hardlink", "h", str(secret))), target)
    with pytest.raises(UnsafeArchiveError, match=r"'\.\.'"):
        extract_tree(archive(("hardlink", "h", "../secret")), target)
    assert secret.stat().st_nlink == 1


def test_hardlink_through_a_symlink_is_refused(tmp_path: Path, target: Path) -> None:
    (tmp_path / "secret").write_text("s")
    target.mkdir()
    (target / "out").symlink_to(tmp_path)
    with pytest.raises(UnsafeArchiveError, match="through the symlink"):
        extract_tree(archive(("hardlink", "h", "out/secret")), target)


def test_hardlink_to_a_symlink_is_refused(target: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="not a regular file"):
        extract_tree(archive(("symlink", "s", "nowhere"), ("hardlink", "h", "s")), target)


def test_hardlink_to_a_missing_member_is_refused(target: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="not an earlier member"):
        extract_tree(archive(("hardlink", "h", "missing")), target)


@pytest.mark.parametrize(("kind", "what"), [("chr", "device"), ("blk", "device"), ("fifo", "fifo")])
def test_device_and_fifo_members_are_refused(target: Path, kind: str, what: str) -> None:
    with pytest.raises(UnsafeArchiveError, match=what):
        extract_tree(archive((kind, "node", b"")), target)
    assert not (target / "node").exists()


def sparse_archive(**pax: str) -> io.BytesIO:
    """One member claiming 2**70 bytes: a GNU sparse header, or pax GNU.sparse records."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("hole")
        info.pax_headers = {"size": str(2**70), **pax}
        if not pax:
            info.type = tarfile.GNUTYPE_SPARSE
        tar.addfile(info)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    "pax",
    [{}, {"GNU.sparse.map": "0,0", "GNU.sparse.realsize": str(2**70)}],
    ids=["gnu-header", "pax-records"],
)
def test_sparse_members_are_refused_before_any_hole_is_written(
    tmp_path: Path, target: Path, pax: dict[str, str]
) -> None:
    # Found by the fuzzer: tarfile fills a sparse member's holes with zeros without reading a
    # byte, so a few hundred bytes of archive could write until the disk is full.
    with pytest.raises(UnsafeArchiveError, match="'hole' is a sparse file"):
        extract_tree(sparse_archive(**pax), target)
    with pytest.raises(UnsafeArchiveError, match="sparse file"):
        extract_file(sparse_archive(**pax), tmp_path / "file")
    assert not (target / "hole").exists()
    assert not (tmp_path / "file").exists()


def test_nul_in_name_is_refused() -> None:
    # tarfile itself cuts names at NUL; the name check refuses them anyway.
    with pytest.raises(UnsafeArchiveError, match="NUL"):
        member_parts("a\x00b")


def test_single_file_extraction_refuses_other_shapes(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="not one"):
        extract_file(archive(("symlink", "f", "/etc/passwd")), tmp_path / "f")
    with pytest.raises(UnsafeArchiveError, match="another member"):
        extract_file(archive(("file", "a", b"1"), ("file", "b", b"2")), tmp_path / "g")
    with pytest.raises(UnsafeArchiveError, match="device"):
        extract_file(archive(("chr", "a", b"")), tmp_path / "h")


def test_single_file_extraction_replaces_a_symlink_instead_of_writing_through(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    dest = tmp_path / "dest"
    dest.symlink_to(victim)
    extract_file(archive(("file", "x", b"new")), dest)
    assert victim.read_text() == "untouched"
    assert not dest.is_symlink()
    assert dest.read_bytes() == b"new"


def test_extracting_a_file_never_follows_an_existing_symlink(tmp_path: Path, target: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    target.mkdir()
    (target / "f").symlink_to(victim)
    extract_tree(archive(("file", "f", b"new")), target)
    assert victim.read_text() == "untouched"
    assert (target / "f").read_bytes() == b"new"


def test_not_a_tar_is_a_clear_error(target: Path) -> None:
    with pytest.raises(FileTransferError, match="not a tar archive"):
        extract_tree(io.BytesIO(b"this is not a tar archive at all" * 40), target)
    with pytest.raises(FileTransferError, match="not a tar archive"):
        extract_tree(io.BytesIO(b""), target)


def test_truncated_archive_is_a_clear_error(target: Path) -> None:
    data = archive(("file", "big", os.urandom(50_000))).getvalue()
    with pytest.raises(FileTransferError, match="damaged"):
        extract_tree(io.BytesIO(data[:20_000]), target)


def test_safe_links_inside_are_kept(target: Path) -> None:
    stats = extract_tree(
        archive(
            ("dir", "d", b""),
            ("file", "d/f", b"data"),
            ("symlink", "d/rel", "f"),
            ("symlink", "up", "d/../d/f"),
            ("symlink", "dangling", "d/missing"),
            ("hardlink", "hard", "d/f"),
        ),
        target,
    )
    assert (target / "d" / "rel").read_bytes() == b"data"
    assert os.readlink(target / "up") == "d/../d/f"
    assert os.readlink(target / "dangling") == "d/missing"
    assert os.stat(target / "hard").st_ino == os.stat(target / "d" / "f").st_ino
    assert (stats.files, stats.symlinks, stats.hardlinks) == (1, 3, 1)
