"""Unpack one image layer into a directory that overlayfs can use as a lower layer.

Safety is about the host, not the container: no member is written outside the layer
directory (absolute names and ``..`` are refused, and nothing is ever written *through* a
symlink), hard links must point at an earlier regular file or link of the same layer. Symlink
*targets* are kept as written, absolute ones included (``/bin/sh -> /bin/busybox``): they
are resolved by the kernel inside the sandbox's root, never by us on the host.

Deliberate choices: device nodes are skipped (a sandbox gets its own small ``/dev``); fifos
are made; whiteouts (``.wh.NAME``) become overlayfs whiteouts (a 0/0 character device) and
opaque markers (``.wh..wh..opq``) the ``trusted.overlay.opaque`` attribute, both of which
need root. Run as root, owners are kept as numeric ids (sandboxes share the host's user
namespace, so ids map 1:1) and setuid/setgid bits stay, as in Docker, because images rely on
them (``su``, ``ping``); run as anyone else, files belong to that user and those bits go.
File capabilities and other extended attributes are not applied.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import IO, Any

from pytest_northflank.errors import UnsafeArchiveError
from pytest_northflank.tarsafety import DAMAGED, clamp_mtime, member_parts, real_parent

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_COPY = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class LayerError(Exception):
    """A layer that cannot be unpacked (damaged, unsupported); the cache names the image."""


def open_layer(path: Path) -> IO[bytes]:
    """A readable stream of the layer's tar, whatever its compression (by magic bytes)."""
    raw = open(path, "rb")  # noqa: SIM115  returned to the caller, who closes it
    head = raw.read(4)
    raw.seek(0)
    if head.startswith(_GZIP_MAGIC):
        raw.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]  # owns its file
    if head == _ZSTD_MAGIC:
        try:
            import zstandard  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raw.close()
            raise LayerError(
                "the layer is zstd-compressed; install the 'zstandard' package"
            ) from None
        stream: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        return stream
    return raw


def unpack_layer(source: IO[bytes], target: Path) -> None:
    """Unpack the tar stream ``source`` into the new directory ``target``."""
    writer = _LayerWriter(target)
    try:
        archive = tarfile.open(fileobj=source, mode="r|", errorlevel=2)  # noqa: SIM115
    except DAMAGED as exc:
        raise LayerError(f"not a tar archive: {exc}") from None
    try:
        for info in archive:
            writer.add(info, archive)
    except DAMAGED as exc:
        raise LayerError(f"damaged tar archive: {exc}") from None
    except OSError as exc:
        raise LayerError(f"cannot unpack: {exc.strerror or exc} ({exc.filename})") from None
    finally:
        archive.close()
    writer.finish()


class _LayerWriter:
    def __init__(self, root: Path) -> None:
        os.mkdir(root, 0o755)
        self.root = str(root)
        self.privileged = os.geteuid() == 0
        self.dir_attrs: list[tuple[str, tarfile.TarInfo]] = []

    def add(self, info: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
        parts = member_parts(info.name)
        if not parts:  # the layer's root itself ("./")
            return
        name = parts[-1]
        if name == OPAQUE_MARKER:
            directory = self._directory(parts[:-1], info.name)
            self._need_privilege(info.name)
            os.setxattr(directory, OPAQUE_XATTR, b"y", follow_symlinks=False)
            return
        if name.startswith(WHITEOUT_PREFIX):
            self._need_privilege(info.name)
            path = self._slot([*parts[:-1], name[len(WHITEOUT_PREFIX) :]], info.name)
            os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            return
        if info.ischr() or info.isblk():
            return  # devices: deliberately skipped
        if info.type == tarfile.GNUTYPE_SPARSE or info.sparse is not None:
            raise UnsafeArchiveError(f"archive member {info.name!r} is a sparse file")
        if info.isdir():
            path = self._directory(parts, info.name)
            self.dir_attrs.append((path, info))
            return
        path = self._slot(parts, info.name)
        if info.issym():
            os.symlink(info.linkname, path)
        elif info.islnk():
            source_parts = member_parts(info.linkname, "hardlink target")
            source = os.path.join(self._parent(source_parts, info.name), source_parts[-1])
            if not os.path.lexists(source) or os.path.isdir(source):
                raise UnsafeArchiveError(
                    f"archive hardlink {info.name!r} points to {info.linkname!r}, which is not "
                    "an earlier file of the layer"
                )
            os.link(source, path, follow_symlinks=False)
            return  # shares the inode (and its owner and mode) with its source
        elif info.isfifo():
            os.mkfifo(path, 0o600)
        elif info.isreg():
            data = archive.extractfile(info)
            assert data is not None
            self._write(path, data)
        else:
            raise UnsafeArchiveError(f"archive member {info.name!r} has type {info.type!r}")
        self._attributes(path, info)

    # -- paths -----------------------------------------------------------------------------

    def _parent(self, parts: list[str], name: str) -> str:
        return real_parent(self.root, parts, name)

    def _slot(self, parts: list[str], name: str) -> str:
        """A free path for a non-directory member; a later member replaces an earlier one."""
        path = os.path.join(self._parent(parts, name), parts[-1])
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return path
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
        return path

    def _directory(self, parts: list[str], name: str) -> str:
        if not parts:
            return self.root
        path = os.path.join(self._parent(parts, name), parts[-1])
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o755)
            return path
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            os.mkdir(path, 0o755)
        return path

    def _need_privilege(self, name: str) -> None:
        if not self.privileged:
            raise LayerError(f"{name!r} is a whiteout, which only root can unpack for overlayfs")

    # -- content and attributes ------------------------------------------------------------

    @staticmethod
    def _write(path: str, data: IO[bytes]) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with os.fdopen(os.open(path, flags, 0o600), "wb") as out:
            while piece := data.read(_COPY):
                out.write(piece)

    def _attributes(self, path: str, info: tarfile.TarInfo) -> None:
        mode = info.mode & (0o7777 if self.privileged else 0o777)
        if self.privileged:
            os.lchown(path, info.uid, info.gid)  # before chmod: chown clears setuid
        if not info.issym():
            os.chmod(path, mode)
        mtime = clamp_mtime(info)
        os.utime(path, (mtime, mtime), follow_symlinks=False)

    def finish(self) -> None:
        # Directories last, deepest first: a read-only directory must not block its children.
        for path, info in reversed(self.dir_attrs):
            self._attributes(path, info)


def layer_size(root: Path) -> int:
    """Bytes used by the files of an unpacked layer (hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            st: Any = os.lstat(os.path.join(parent, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total
