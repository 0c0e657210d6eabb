"""Streaming tar: pack a local file or tree into fixed-size chunks, and extract a tar stream
safely. Pure (local files only, no network), so both halves are unit-tested alone.

Packing writes POSIX (pax) headers with :class:`tarfile.TarInfo` and streams file contents
in pieces, so memory stays flat whatever the size. The archive is not compressed: the bytes
are mostly already-compressed or random in the cases where size matters, gzip is CPU-bound
on one core at both ends, and plain ``tar -xf -``/``tar -cf -`` needs nothing but tar in the
image.

Extraction reads with ``tarfile`` in stream mode (``r|``) and writes every member itself,
refusing anything that could land outside the target: absolute names, ``..`` components,
symlinks or hardlinks pointing outside, writes through a symlink, and device or fifo members.
Each refusal raises :class:`~pytest_northflank.errors.UnsafeArchiveError` naming the member.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from pytest_northflank.errors import FileTransferError, UnsafeArchiveError
from pytest_northflank.tarsafety import DAMAGED, clamp_mtime, member_parts, real_parent, within

__all__ = [
    "ChunkWriter",
    "ExtractStats",
    "PackStats",
    "extract_file",
    "extract_tree",
    "pack",
]

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_READ_SIZE = 1024 * 1024
_COPY_SIZE = 1024 * 1024
# Permission bits kept on extraction; setuid, setgid and sticky are dropped.
_MODE_MASK = 0o777


class _Writer(Protocol):
    def write(self, data: bytes) -> object: ...


class ChunkWriter:
    """A write-only sink that cuts the byte stream into chunks of exactly ``size`` bytes (the
    last one shorter) and hands each to ``emit``. Keeps at most one chunk in memory."""

    def __init__(self, emit: Callable[[bytes], None], size: int) -> None:
        if size <= 0:
            raise ValueError(f"chunk size must be positive, got {size}")
        self._emit = emit
        self._size = size
        self._buffer = bytearray()
        self.total = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._buffer += data
        self.total += len(data)
        while len(self._buffer) >= self._size:
            self._emit(bytes(self._buffer[: self._size]))
            del self._buffer[: self._size]  # O(1) from the front of a bytearray
        return len(data)

    def close(self) -> None:
        """Emit what is left (a final, shorter chunk)."""
        if self._buffer:
            self._emit(bytes(self._buffer))
            self._buffer.clear()


@dataclass
class PackStats:
    """What :func:`pack` wrote."""

    files: int = 0
    directories: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "an unsupported file type"


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def pack(source: Path, arcname: str, out: _Writer) -> PackStats:
    """Write a tar of ``source`` (a file, or a directory and everything under it) to ``out``.

    ``arcname`` is the archive name of ``source`` itself (``"."`` puts a directory's contents
    at the top). Symlinks are stored as links (never followed), hardlinked files once plus
    links, empty directories and permission bits are kept; owners are not (the receiving tar
    runs with ``--no-same-owner``). Fifos, sockets and devices raise ``FileTransferError``.
    """
    stats = PackStats()
    seen_inodes: dict[tuple[int, int], str] = {}

    def add(path: Path, name: str) -> None:
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise FileTransferError(f"cannot read {path}: {exc.strerror}") from None
        info = tarfile.TarInfo(name)
        info.mode = stat.S_IMODE(st.st_mode)
        info.mtime = int(st.st_mtime)
        info.uid = st.st_uid
        info.gid = st.st_gid
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            out.write(_header(info))
            stats.directories += 1
            try:
                children = sorted(os.listdir(path))
            except OSError as exc:
                raise FileTransferError(f"cannot list {path}: {exc.strerror}") from None
            for child in children:
                add(path / child, child if name == "." else f"{name}/{child}")
        elif stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(path)
            out.write(_header(info))
            stats.symlinks += 1
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen_inodes:
                info.type = tarfile.LNKTYPE
                info.linkname = seen_inodes[key]
                out.write(_header(info))
                stats.hardlinks += 1
                return
            if st.st_nlink > 1:
                seen_inodes[key] = name
            info.type = tarfile.REGTYPE
            info.size = st.st_size
            out.write(_header(info))
            _copy_file(path, st.st_size, out)
            stats.files += 1
            stats.bytes += st.st_size
        else:
            raise FileTransferError(
                f"cannot upload {path}: it is {_kind(st.st_mode)}; only regular files, "
                "directories and symlinks are copied"
            )

    add(source, arcname)
    # End of archive: two zero blocks, padded to a whole record as tar itself writes it.
    written = getattr(out, "total", None)
    tail = 2 * _BLOCK
    if isinstance(written, int):
        tail += -(written + tail) % _RECORD
    out.write(bytes(tail))
    return stats


def _copy_file(path: Path, size: int, out: _Writer) -> None:
    remaining = size
    try:
        with open(path, "rb") as handle:
            while remaining > 0:
                piece = handle.read(min(_READ_SIZE, remaining))
                if not piece:
                    raise FileTransferError(
                        f"{path} shrank while it was being uploaded ({size - remaining} of "
                        f"{size} bytes read)"
                    )
                out.write(piece)
                remaining -= len(piece)
    except OSError as exc:
        raise FileTransferError(f"cannot read {path}: {exc.strerror}") from None
    padding = -size % _BLOCK
    if padding:
        out.write(bytes(padding))


# --------------------------------------------------------------------------- extraction


@dataclass
class ExtractStats:
    """What an extraction wrote."""

    files: int = 0
    directories: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0
    paths: list[str] = field(default_factory=list, repr=False)


class _TreeWriter:
    """Writes members under ``root`` without ever following a symlink on the way."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = os.path.realpath(root)
        self.stats = ExtractStats()
        self.new_symlinks: list[str] = []
        self.dir_attrs: list[tuple[str, int, int]] = []

    def _parent(self, parts: list[str], name: str) -> str:
        return real_parent(self.root, parts, name)

    def _clear(self, path: str, name: str) -> None:
        """Remove a file or symlink at ``path`` so the member replaces it (never a directory)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise FileTransferError(
                f"cannot extract {name!r}: a directory with that name is in the way"
            )
        os.unlink(path)

    def directory(self, parts: list[str], info: tarfile.TarInfo) -> None:
        if not parts:
            self.dir_attrs.append((self.root, info.mode, clamp_mtime(info)))
            return
        parent = self._parent(parts, info.name)
        path = os.path.join(parent, parts[-1])
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o700)
        else:
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeArchiveError(
                    f"archive member {info.name!r} would turn the symlink into a directory path"
                )
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(path)
                os.mkdir(path, 0o700)
        self.dir_attrs.append((path, info.mode, clamp_mtime(info)))
        self.stats.directories += 1
        self.stats.paths.append("/".join(parts))

    def regular(self, parts: list[str], info: tarfile.TarInfo, data: IO[bytes]) -> None:
        if not parts:
            raise UnsafeArchiveError(f"archive member {info.name!r} is a file at the target root")
        parent = self._parent(parts, info.name)
        path = os.path.join(parent, parts[-1])
        self._clear(path, info.name)
        self.stats.bytes += _write_file(path, data, info)
        self.stats.files += 1
        self.stats.paths.append("/".join(parts))

    def symlink(self, parts: list[str], info: tarfile.TarInfo) -> None:
        target = info.linkname
        if not parts:
            raise UnsafeArchiveError(f"archive member {info.name!r} is a link at the target root")
        if not target or target.startswith("/"):
            raise UnsafeArchiveError(
                f"archive symlink {info.name!r} points to the absolute path {target!r}"
            )
        lexical = posixpath.normpath(posixpath.join(posixpath.dirname("/".join(parts)), target))
        if lexical == ".." or lexical.startswith("../"):
            raise UnsafeArchiveError(
                f"archive symlink {info.name!r} points outside the target ({target!r})"
            )
        parent = self._parent(parts, info.name)
        path = os.path.join(parent, parts[-1])
        self._clear(path, info.name)
        os.symlink(target, path)
        self.new_symlinks.append(path)
        self.stats.symlinks += 1
        self.stats.paths.append("/".join(parts))

    def hardlink(self, parts: list[str], info: tarfile.TarInfo) -> None:
        if not parts:
            raise UnsafeArchiveError(f"archive member {info.name!r} is a link at the target root")
        source_parts = member_parts(info.linkname, "hardlink target")
        if not source_parts:
            raise UnsafeArchiveError(f"archive hardlink {info.name!r} points at the target root")
        source = os.path.join(self._parent(source_parts, info.name), source_parts[-1])
        try:
            st = os.lstat(source)
        except FileNotFoundError:
            raise UnsafeArchiveError(
                f"archive hardlink {info.name!r} points to {info.linkname!r}, which is not "
                "an earlier member of the archive"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeArchiveError(
                f"archive hardlink {info.name!r} points to {info.linkname!r}, which is not a "
                "regular file"
            )
        parent = self._parent(parts, info.name)
        path = os.path.join(parent, parts[-1])
        self._clear(path, info.name)
        os.link(source, path, follow_symlinks=False)
        self.stats.hardlinks += 1
        self.stats.paths.append("/".join(parts))

    def finish(self) -> None:
        # A chain of individually harmless links can still resolve outside (``a -> .`` then
        # ``b -> a/..``): check where every new link really leads once all are in place.
        for path in self.new_symlinks:
            real = os.path.realpath(path)
            if not within(self.root, real):
                os.unlink(path)
                raise UnsafeArchiveError(
                    f"archive symlink {os.path.relpath(path, self.root)!r} resolves outside "
                    f"the target (to {real!r})"
                )
        # Directory modes and times last: a read-only directory must not block its children,
        # and writing children changes a directory's mtime.
        for path, mode, mtime in reversed(self.dir_attrs):
            os.chmod(path, mode & _MODE_MASK)
            os.utime(path, (mtime, mtime))


def _write_file(path: str, data: IO[bytes], info: tarfile.TarInfo) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    written = 0
    with os.fdopen(fd, "wb") as handle:
        while True:
            piece = data.read(_COPY_SIZE)
            if not piece:
                break
            handle.write(piece)
            written += len(piece)
        os.fchmod(handle.fileno(), info.mode & _MODE_MASK)
    mtime = clamp_mtime(info)
    os.utime(path, (mtime, mtime))
    return written


def _check_type(info: tarfile.TarInfo) -> None:
    # A sparse member's map can describe holes of any size that tarfile fills with zeros
    # without reading a byte: a few hundred bytes of archive could fill the disk. Neither the
    # tar in a sandbox (without -S) nor our packer writes them.
    if info.type == tarfile.GNUTYPE_SPARSE or info.sparse is not None:
        raise UnsafeArchiveError(f"archive member {info.name!r} is a sparse file")
    if info.ischr() or info.isblk():
        raise UnsafeArchiveError(f"archive member {info.name!r} is a device file")
    if info.isfifo():
        raise UnsafeArchiveError(f"archive member {info.name!r} is a fifo")
    if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
        raise UnsafeArchiveError(
            f"archive member {info.name!r} has an unsupported type {info.type!r}"
        )


def _open_stream(source: IO[bytes]) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=source, mode="r|", errorlevel=2)
    except DAMAGED as exc:
        raise FileTransferError(f"the received data is not a tar archive: {exc}") from None


def extract_tree(source: IO[bytes], target: Path) -> ExtractStats:
    """Extract the tar stream ``source`` into the directory ``target`` (created if missing)."""
    writer = _TreeWriter(target)
    archive = _open_stream(source)
    try:
        for info in archive:
            _check_type(info)
            parts = member_parts(info.name)
            if info.isdir():
                writer.directory(parts, info)
            elif info.issym():
                writer.symlink(parts, info)
            elif info.islnk():
                writer.hardlink(parts, info)
            else:
                data = archive.extractfile(info)
                assert data is not None  # regular member
                writer.regular(parts, info, data)
    except DAMAGED as exc:
        raise FileTransferError(f"the received tar archive is damaged: {exc}") from None
    except OSError as exc:
        raise FileTransferError(
            f"cannot write under {target}: {exc.strerror or exc}"
            + (f" ({exc.filename})" if exc.filename else "")
        ) from None
    finally:
        archive.close()
    writer.finish()
    return writer.stats


def extract_file(source: IO[bytes], destination: Path) -> ExtractStats:
    """Extract a tar stream holding exactly one regular file to the path ``destination``
    (whatever the member's name). Any other member shape raises ``UnsafeArchiveError``."""
    stats = ExtractStats()
    archive = _open_stream(source)
    try:
        for info in archive:
            _check_type(info)
            member_parts(info.name)
            if not info.isreg():
                raise UnsafeArchiveError(
                    f"expected a single regular file, but archive member {info.name!r} is not one"
                )
            if stats.files:
                raise UnsafeArchiveError(
                    f"expected a single regular file, but the archive has another member "
                    f"{info.name!r}"
                )
            destination.parent.mkdir(parents=True, exist_ok=True)
            if destination.is_symlink() or destination.exists():
                if destination.is_dir() and not destination.is_symlink():
                    raise FileTransferError(f"cannot write {destination}: it is a directory")
                destination.unlink()
            data = archive.extractfile(info)
            assert data is not None
            stats.bytes += _write_file(str(destination), data, info)
            stats.files += 1
    except DAMAGED as exc:
        raise FileTransferError(f"the received tar archive is damaged: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.EACCES:
            raise FileTransferError(f"cannot write {destination}: permission denied") from None
        raise FileTransferError(f"cannot write {destination}: {exc.strerror or exc}") from None
    finally:
        archive.close()
    if not stats.files:
        raise FileTransferError("the received tar archive holds no file")
    return stats
