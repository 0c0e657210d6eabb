"""Who left a directory behind: an emulator process named by its pid and start time.

A SIGKILLed emulator cannot clean up, so what it creates on the host (its state directory,
its cgroups) carries the owner's name, ``<pid>-<start time>-<pid namespace>``; the next
emulator removes what belongs to owners that are gone. The start time (in clock ticks since
boot, from ``/proc/<pid>/stat``) tells a reused pid from the owner, and an owner in another
PID namespace (a container sharing the temporary directory) is never judged, so nothing of
a live emulator is ever taken.
"""

from __future__ import annotations

import os
import re

OWNER_RE = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = data[data.rfind(b")") + 2 :].split()
    return int(fields[19])  # field 22 of the whole line


def pid_namespace() -> int:
    """This process's PID namespace (0 where ``/proc`` does not tell)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def owner_name(pid: int | None = None) -> str:
    """``<pid>-<start time>-<pid namespace>`` of this process (or of ``pid``, a process
    in the same PID namespace); zeros for what ``/proc`` does not tell."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{start_time(pid) or 0}-{pid_namespace()}"


def owner_gone(name: str) -> bool:
    """True when ``name`` (from :func:`owner_name`) names a process that no longer runs.

    False for anything that is not such a name, for an owner in another PID namespace, and
    when there is no ``/proc`` to ask.
    """
    match = OWNER_RE.match(name)
    if match is None or not os.path.isdir("/proc/self"):
        return False
    pid, started, namespace = (int(group) for group in match.groups())
    if namespace != pid_namespace():
        return False
    return start_time(pid) != started
