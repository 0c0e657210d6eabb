"""Pseudo-terminals for a namespace sandbox's execs, from the sandbox's own devpts.

Each namespace sandbox mounts a private devpts instance on its ``/dev/pts`` (``in_sandbox``
builds its ``/dev``), so a terminal opened on the host's devpts would have no name inside
and the host's terminals are out of its reach. An exec with a tty therefore gets a pair
allocated in the sandbox's instance, reached from the host through ``/proc/<pid>/root``
(the sandbox's PID 1 sees that root), and shows up inside as ``/dev/pts/N``.
"""

from __future__ import annotations

import fcntl
import os
import struct

# TIOCGPTN and TIOCSPTLCK (_IOR/_IOW('T', 0x30/0x31, unsigned int)); the read and write
# direction bits are swapped on the architectures that encode them differently.
_SWAPPED_DIRECTIONS = ("ppc", "mips", "sparc", "alpha")
_READ, _WRITE = 0x80045430, 0x40045431
if os.uname().machine.startswith(_SWAPPED_DIRECTIONS):
    _READ, _WRITE = 0x40045430, 0x80045431
TIOCGPTN, TIOCSPTLCK = _READ, _WRITE


def open_sandbox_pty(pid: int) -> tuple[int, int]:
    """A new (master, slave) pair in the devpts of the sandbox whose PID 1 is ``pid``.

    Raises OSError when the sandbox is gone.
    """
    pts = f"/proc/{pid}/root/dev/pts"
    master = os.open(f"{pts}/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))  # unlockpt()
        (number,) = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, struct.pack("I", 0)))
        slave = os.open(f"{pts}/{number}", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    return master, slave
