"""Local containers for the emulator: one per sandbox, entered by exec.

Namespace isolation (Linux, root): the sandbox's main command runs as PID 1 of new mount,
PID, UTS and IPC namespaces. Its root is an overlay with ``lowerdir=/`` (the host's userland,
read through) and upper/work directories on a tmpfs that exists only inside the sandbox's
mount namespace, so writes anywhere (``/etc`` too) stay in the sandbox and vanish with it.
Mounted fresh: ``/proc`` (the sandbox's PIDs only), a small ``/dev`` (its own null, zero,
full, random, urandom and tty nodes, whose metadata the sandbox may change without touching
the host's; a devpts instance of its own, so the host's terminals are out of sight and
reach; a private ``/dev/shm``; see ``devices``),
a read-only ``/sys``, and empty tmpfs over every host directory an image would not have
(``/tmp``, ``/var/tmp``, ``/root``, ``/home``, ``/run``, the checkout under test, the runtime's
state directory; see ``host_view``). The root is switched with ``pivot_root``, so the
host's mount tree is not reachable; the hostname is the sandbox id; cwd is ``/``; the
environment defaults are ``PATH``, ``HOME=/root`` and ``HOSTNAME``. The Python running the
emulator is never needed inside.

Directory isolation (the fallback): each sandbox gets ``<state_dir>/<id>-<random>/`` with
``home/`` (``HOME``), ``tmp/`` (``TMPDIR``) and ``work/`` (cwd). Processes run in their own
sessions and are killed by process group, plus a sweep for processes carrying the sandbox's
``HOME``/``TMPDIR``. Sandboxes can see the host's (and each other's) files.

Either way each sandbox gets its plan's memory and a process count (``limits``: cgroups
where writable, else rlimits), and what a SIGKILLed emulator left on disk is reclaimed by
the next one (``state_dirs``).

Either way every process starts through ``in_sandbox.py`` (the launcher; ``start_in_sandbox``
starts it and reads its report), forked from one long-lived thread (``spawn_thread``)
with a parent-death signal, so sandboxes die with the emulator even when it is SIGKILLed.
"""

from __future__ import annotations

from pytest_northflank.emulator.runtime.container import Container, IsolationMode, LogRecord
from pytest_northflank.emulator.runtime.container_runtime import (
    ContainerRuntime,
    IsolationSetting,
    probe_namespaces,
)
from pytest_northflank.emulator.runtime.errors import (
    CommandNotExecutable,
    CommandNotFound,
    CommandNotRunnable,
)
from pytest_northflank.emulator.runtime.exec_process import ExecProcess
from pytest_northflank.emulator.runtime.limits import (
    DEFAULT_MAX_PROCESSES,
    PLAN_MEMORY_MB,
    LimitSetting,
)

__all__ = [
    "DEFAULT_MAX_PROCESSES",
    "PLAN_MEMORY_MB",
    "CommandNotExecutable",
    "CommandNotFound",
    "CommandNotRunnable",
    "Container",
    "ContainerRuntime",
    "ExecProcess",
    "IsolationMode",
    "IsolationSetting",
    "LimitSetting",
    "LogRecord",
    "probe_namespaces",
]
