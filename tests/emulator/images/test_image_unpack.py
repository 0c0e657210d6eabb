"""Layer unpacking: what lands on the host, and what is refused."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from image_builder import Layer

from pytest_northflank.emulator.images.unpack import OPAQUE_XATTR, unpack_layer
from pytest_northflank.errors import UnsafeArchiveError

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts and owners need root")


def unpack(layer: Layer, target: Path) -> Path:
    unpack_layer(io.BytesIO(layer.tar()), target)
    return target


def test_files_links_and_absolute_symlink_targets_are_kept(tmp_path: Path) -> None:
    layer = (
        Layer().directory("bin").file("bin/tool", b"#!x", 0o755)
        .symlink("bin/sh", "/bin/tool").hardlink("bin/tool2", "bin/tool")
    )  # fmt: skip
    root = unpack(layer, tmp_path / "l")
    assert (root / "bin/tool").read_bytes() == b"#!x"
    assert os.readlink(root / "bin/sh") == "/bin/tool"  # resolved inside the sandbox only
    assert os.stat(root / "bin/tool2").st_ino == os.stat(root / "bin/tool").st_ino
    assert stat.S_IMODE(os.stat(root / "bin/tool").st_mode) == 0o755


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (Layer().file("/etc/passwd", b"x"), "absolute path"),
        (Layer().file("a/../../escape", b"x"), "'..'"),
        (Layer().symlink("out", "/etc").file("out/passwd", b"x"), "through the symlink .out."),
        (Layer().symlink("up", "..").file("up/x", b"x"), "through the symlink .up."),
        (Layer().hardlink("h", "missing"), "not an earlier file"),
        (Layer().hardlink("h", "../../etc/shadow"), "'..'"),
    ],
    ids=[
        "absolute",
        "dotdot",
        "through-symlink",
        "through-relative-symlink",
        "hardlink-missing",
        "hardlink-escape",
    ],
)
def test_nothing_escapes_the_layer(tmp_path: Path, layer: Layer, message: str) -> None:
    with pytest.raises(UnsafeArchiveError, match=message):
        unpack(layer, tmp_path / "l")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l"]
    assert not os.path.exists("/escape")


def test_devices_are_skipped(tmp_path: Path) -> None:
    root = unpack(Layer().directory("dev").device("dev/null").file("kept", b"1"), tmp_path / "l")
    assert not os.path.lexists(root / "dev/null")
    assert (root / "kept").exists()


@needs_root
def test_whiteouts_become_overlay_whiteouts(tmp_path: Path) -> None:
    layer = Layer().directory("etc").whiteout("etc/motd").directory("var").opaque("var")
    root = unpack(layer, tmp_path / "l")
    st = os.lstat(root / "etc/motd")
    assert stat.S_ISCHR(st.st_mode)
    assert st.st_rdev == 0
    assert not (root / "etc/.wh.motd").exists()
    assert os.getxattr(root / "var", OPAQUE_XATTR) == b"y"


@needs_root
def test_owners_kept_and_setuid_kept_deliberately_as_root(tmp_path: Path) -> None:
    layer = Layer().file("su", b"x", 0o4755, uid=0).file("owned", b"x", 0o640, uid=1234, gid=99)
    root = unpack(layer, tmp_path / "l")
    assert stat.S_IMODE(os.stat(root / "su").st_mode) == 0o4755
    st = os.stat(root / "owned")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 99, 0o640)


def test_later_member_replaces_earlier(tmp_path: Path) -> None:
    root = unpack(Layer().file("f", b"one").file("f", b"two"), tmp_path / "l")
    assert (root / "f").read_bytes() == b"two"
