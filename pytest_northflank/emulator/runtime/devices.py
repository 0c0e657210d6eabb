"""Pseudo-terminals for a namespace sandbox's execs, from the sandbox's own devpts.

Each namespace sandbox mounts a private devpts instance on its ``/dev/pts`` (``in_sandbox``
builds its ``/dev``), so a terminal opened on the host's devpts would have no name inside
and the host's terminals are out of its reach. An exec with a tty therefore gets a pair
allocated in the sandbox's instance, reached from the host through ``/proc/<pid>/root``
(the sandbox's PID 1 sees that root), and shows up inside as ``/dev/pts/N``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct

# TIOCGPTN and TIOCSPTLCK (_IOR/_IOW('T', 0x30/0x31, unsigned int)); the read and write
# direction bits are swapped on the architectures that encode them differently.
_SWAPPED_DIRECTIONS = ("ppc", "mips", "sparc", "alpha")
_READ, _WRITE = 0x80045430, 0x40045431
if os.uname().machine.startswith(_SWAPPED_DIRECTIONS):
    _READ, _WRITE = 0x40045430, 0x80045431
TIOCGPTN, TIOCSPTLCK = _READ, _WRITE
PTMX = (5, 2)


def open_sandbox_pty(pid: int) -> tuple[int, int]:
    """A new (master, slave) pair in the devpts of the sandbox whose PID 1 is ``pid``.

    The path is resolved through the sandbox's root, where root inside could plant links
    (after a ``chroot`` of PID 1, say): so PID 1's root must be the sandbox's own, and what
    is opened must be a ptmx and a terminal of one devpts that is not the host's. Raises
    OSError when the sandbox is gone or any of that does not hold.
    """
    root = f"/proc/{pid}/root"
    if os.readlink(root) != "/":
        raise OSError(errno.EPERM, "the sandbox's main process changed its root directory")
    pts = f"{root}/dev/pts"
    flags = os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW
    master = os.open(f"{pts}/ptmx", flags)
    try:
        info = os.fstat(master)
        if not _is_char_device(info, PTMX) or info.st_dev == _host_devpts():
            raise OSError(errno.EPERM, "/dev/pts/ptmx of the sandbox is not its own devpts")
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))  # unlockpt()
        (number,) = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, struct.pack("I", 0)))
        slave = os.open(f"{pts}/{number}", flags)
    except BaseException:
        os.close(master)
        raise
    peer = os.fstat(slave)
    if peer.st_dev != info.st_dev or not stat.S_ISCHR(peer.st_mode):
        os.close(master)
        os.close(slave)
        raise OSError(errno.EPERM, f"/dev/pts/{number} of the sandbox is not its terminal")
    return master, slave


def _is_char_device(info: os.stat_result, numbers: tuple[int, int]) -> bool:
    device = (os.major(info.st_rdev), os.minor(info.st_rdev))
    return stat.S_ISCHR(info.st_mode) and device == numbers


def _host_devpts() -> int | None:
    try:
        return os.stat("/dev/pts/ptmx").st_dev
    except OSError:
        return None
