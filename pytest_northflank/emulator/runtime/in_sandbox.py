"""Launch or enter a sandbox; run as ``python -I -S in_sandbox.py SPEC_FD REPORT_FD PARENT_PID``.

(About 530 lines: it runs alone inside the sandbox with ``-I -S``, so it cannot import helpers
from the package; everything it needs is here.)

This is the launcher: the only code that runs inside a sandbox (``start_in_sandbox`` is its
parent side in the emulator, ``spawn_thread`` the thread that forks it).

The emulator is multi-threaded, and ``setns(CLONE_NEWNS)`` refuses multi-threaded callers, while
running Python code between ``fork`` and ``exec`` in a threaded process can deadlock. So every
sandbox process is started through this small single-threaded launcher. It imports only the
standard library (never this package), because after entering a sandbox the host's files behind
masked directories (the interpreter may live under ``/root``) are gone.

The launcher reads a JSON spec from SPEC_FD, forks the target (after creating or entering the
namespaces), and writes exactly one JSON object to REPORT_FD: ``{"pid": N}`` once the target's
``execve`` succeeded, or ``{"error": {"stage", "errno", "message"}}``. It then stays as the target's
parent, so the target is always reaped, and relays signals:

* SIGTERM: forwarded to the target (for an exec: to its process group).
* SIGUSR1: SIGKILL for the target and everything it started. This is also the launcher's
  parent-death signal, so a SIGKILLed emulator leaves no sandbox process behind.

Its exit status mirrors the target's: the exit code, or 128+N when killed by signal N.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import resource
import select
import signal
import stat
import sys
import termios
import time
import warnings  # noqa: F401  os.execvpe imports it, after the host's files may be masked

# typing and platform would double the launcher's start-up, paid on every exec: annotations
# stay unevaluated, and os.uname() tells the machine.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24

# The capabilities a sandbox's processes keep: a container runtime's default set (Docker's)
# without CAP_MKNOD, since no device cgroup stops a device node here, and without
# CAP_NET_RAW (no raw packets on the sandbox network). The rest (mount, mknod, modules, raw I/O,
# ptrace, sysctl...) would let root inside reach the host.
KEPT_CAPABILITIES = frozenset(
    {
        0,  # CAP_CHOWN
        1,  # CAP_DAC_OVERRIDE
        3,  # CAP_FOWNER
        4,  # CAP_FSETID
        5,  # CAP_KILL
        6,  # CAP_SETGID
        7,  # CAP_SETUID
        8,  # CAP_SETPCAP
        10,  # CAP_NET_BIND_SERVICE
        18,  # CAP_SYS_CHROOT
        29,  # CAP_AUDIT_WRITE
        31,  # CAP_SETFCAP
    }
)
# Kernel interfaces under /proc that act on the whole host: read-only inside a sandbox.
READ_ONLY_PROC = ("sys", "sysrq-trigger", "irq", "bus", "fs")

# glibc has no pivot_root() wrapper; the syscall number depends on the architecture.
PIVOT_ROOT_SYSCALL = {
    "x86_64": 155,
    "aarch64": 41,
    "arm64": 41,
    "riscv64": 41,
    "loongarch64": 41,
    "ppc64le": 203,
    "ppc64": 203,
    "s390x": 217,
    "i386": 217,
    "i686": 217,
    "armv7l": 218,
}

KILL_SIGNAL = signal.SIGUSR1
# Character devices of a sandbox's /dev (major, minor), made afresh: its root may change
# their owner and mode without touching the host's nodes.
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9),
           "tty": (5, 0)}  # fmt: skip
DEV_SYMLINKS = {
    "ptmx": "pts/ptmx",
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
}
# A devpts of its own: the sandbox sees and opens only its own pseudo-terminals.
DEVPTS_OPTIONS = "newinstance,ptmxmode=0666,mode=0620,gid=5"


class SetupError(Exception):
    def __init__(self, stage: str, err: int, message: str = "") -> None:
        self.stage = stage
        self.errno = err
        self.message = message or os.strerror(err)
        super().__init__(f"{stage}: {self.message}")


_libc: Any = None


def libc() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        _libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _libc.unshare.argtypes = [ctypes.c_int]
        _libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]
    return _libc


def check(result: int, stage: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SetupError(stage, err)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    check(
        libc().mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def set_parent_death_signal(signum: int) -> None:
    if sys.platform.startswith("linux"):
        check(libc().prctl(PR_SET_PDEATHSIG, signum), "prctl(PR_SET_PDEATHSIG)")


def build_root(spec: dict[str, Any]) -> None:
    """Give this process (PID 1 of a fresh PID namespace) a private copy-on-write root."""
    sandbox_dir: str = spec["sandbox_dir"]
    if spec.get("netns_fd") is not None:  # its own network namespace, made by the emulator
        check(libc().setns(spec["netns_fd"], CLONE_NEWNET), "join the sandbox network")
    copies = {}  # read while "/" is still the host's, before anything is masked
    for path in spec.get("copied_links", ()):
        with contextlib.suppress(OSError), open(path, "rb") as source:
            copies[path] = source.read()
    check(libc().unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC), "unshare(mount, uts, ipc)")
    # Private propagation: nothing mounted from here on is seen by the host, and everything
    # mounted here vanishes with the namespace, even when the emulator is killed.
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", sandbox_dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    upper, work, root = (os.path.join(sandbox_dir, name) for name in ("upper", "work", "root"))
    for path in (upper, work, root):
        os.mkdir(path)
    lower = "/"
    layers = spec.get("lower_dirs")
    if layers:
        # An image: its layers, top first. Named relative to their common directory, so that
        # the option string (one page at most) holds more of them.
        parents = {os.path.dirname(layer) for layer in layers}
        if len(parents) == 1:
            os.chdir(parents.pop())
            layers = [os.path.basename(layer) for layer in layers]
        lower = ":".join(layers)
    mount("overlay", root, "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}")
    if layers:
        # An image need not have the mount points, nor its own working directory (Docker
        # makes it): made in the sandbox's upper layer, never in the shared image layers.
        for name in ("proc", "dev", "sys", spec["workdir"].lstrip("/")):
            os.makedirs(os.path.join(root, name), exist_ok=True)
    # Submounts of the host (/proc, /dev, /sys, ...) are not part of an overlay of "/".
    proc_flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    mount("proc", root + "/proc", "proc", proc_flags)
    for name in READ_ONLY_PROC:
        target = f"{root}/proc/{name}"
        if os.path.exists(target):
            mount(target, target, None, MS_BIND)
            mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | proc_flags)
    build_dev(root + "/dev")
    with contextlib.suppress(SetupError):  # refused in some containers; /sys is optional
        mount("sysfs", root + "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path, mode in spec["masked_dirs"]:
        target = root + path
        if os.path.isdir(target) and not os.path.islink(target):
            mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode}")
    for path in spec.get("hidden_files", ()):
        with contextlib.suppress(OSError):  # a whiteout in the upper layer; the host's stays
            os.unlink(root + path)
    for path, content in copies.items():
        with contextlib.suppress(OSError):
            with contextlib.suppress(FileNotFoundError):  # an image may have none
                os.unlink(root + path)
            with open(root + path, "wb") as copy:
                copy.write(content)
    for source, target in spec.get("bind_files", ()):  # e.g. the network's /etc/hosts
        os.makedirs(os.path.dirname(root + target), exist_ok=True)
        if os.path.islink(root + target):  # would resolve against the host's root here
            os.unlink(root + target)
        if not os.path.exists(root + target):
            os.close(os.open(root + target, os.O_CREAT | os.O_WRONLY, 0o644))
        mount(source, root + target, None, MS_BIND)
    pivot_root(root)
    hostname = spec["hostname"].encode()
    check(libc().sethostname(hostname, len(hostname)), "sethostname")


def build_dev(dev: str) -> None:
    """A minimal /dev on a small tmpfs: fresh device nodes, a private devpts and /dev/shm."""
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=1m")
    for name, (major, minor) in DEVICES.items():
        node = f"{dev}/{name}"
        try:
            os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(major, minor))
            os.chmod(node, 0o666)  # past the umask
        except PermissionError:  # no mknod here (a device cgroup): the host's node, read-only
            os.close(os.open(node, os.O_CREAT | os.O_WRONLY, 0o666))
            mount(f"/dev/{name}", node, None, MS_BIND)
            mount(None, node, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    os.mkdir(dev + "/pts")
    mount("devpts", dev + "/pts", "devpts", MS_NOSUID | MS_NOEXEC, DEVPTS_OPTIONS)
    os.mkdir(dev + "/shm")
    mount("tmpfs", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for name, target in DEV_SYMLINKS.items():
        os.symlink(target, f"{dev}/{name}")


def join_cgroups(procs_files: list[str]) -> None:
    """Move this launcher into the sandbox's cgroups, so all it starts counts there."""
    for path in procs_files:
        try:
            with open(path, "w") as procs:
                procs.write(str(os.getpid()))
        except OSError as exc:
            raise SetupError(
                "join cgroup", exc.errno or errno.EIO, f"{path}: {exc.strerror}"
            ) from None


def apply_rlimits(rlimits: list[list[Any]]) -> None:
    """Set ``[name, value]`` rlimits (``"AS"``, ``"NPROC"``) where no cgroup limits apply."""
    for name, value in rlimits:
        resource.setrlimit(getattr(resource, "RLIMIT_" + name), (value, value))


def drop_capabilities() -> None:
    """Shrink the capability bounding set to :data:`KEPT_CAPABILITIES`; the ``execve`` that
    follows leaves root with no more than that."""
    with open("/proc/sys/kernel/cap_last_cap") as last:
        highest = int(last.read())
    for capability in range(highest + 1):
        if capability not in KEPT_CAPABILITIES:
            check(libc().prctl(PR_CAPBSET_DROP, capability), "drop capabilities")


def pivot_root(new_root: str) -> None:
    number = PIVOT_ROOT_SYSCALL.get(os.uname().machine)
    if number is None:
        raise SetupError(
            "pivot_root", errno.ENOSYS, f"unknown syscall number on {os.uname().machine}"
        )
    os.chdir(new_root)
    # pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves
    # nothing of the host's mount tree in this namespace.
    check(libc().syscall(ctypes.c_long(number), b".", b"."), "pivot_root")
    check(libc().umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")


def enter_namespaces(spec: dict[str, Any]) -> None:
    """Join the mount, PID, UTS, IPC and network namespaces of the sandbox's PID 1."""
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET
    if libc().setns(spec["target_pidfd"], flags) == 0:
        return
    err = ctypes.get_errno()
    if err != errno.EINVAL:  # EINVAL: kernel older than 5.8, no setns() on a pidfd
        raise SetupError("enter sandbox", err)
    pid = spec["target_pid"]
    fds = {flag: os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY) for flag, name in
           ((CLONE_NEWIPC, "ipc"), (CLONE_NEWUTS, "uts"), (CLONE_NEWPID, "pid"),
            (CLONE_NEWNET, "net"), (CLONE_NEWNS, "mnt"))}  # fmt: skip
    for flag, fd in fds.items():
        check(libc().setns(fd, flag), "enter sandbox")
        os.close(fd)


def launcher_exited(pidfd: int | None) -> bool:
    # getppid() cannot tell: across a PID namespace boundary it returns 0 either way.
    if pidfd is None:
        return False
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def run_child(spec: dict[str, Any], error_pipe: int) -> NoReturn:
    """Runs in the forked child: finish the setup, then exec the target (or report why not)."""
    stage = "setup"
    try:
        # Ignored signals survive execve; Python ignores these two, a normal process does not.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        stage = "prctl"
        set_parent_death_signal(signal.SIGKILL)
        if launcher_exited(spec.get("launcher_pidfd")):
            os._exit(137)  # too late for the parent-death signal to fire
        if spec["action"] == "init" and spec["isolation"] == "namespace":
            build_root(spec)
        stage = "limits"
        apply_rlimits(spec.get("rlimits", []))
        stage = "setsid"
        os.setsid()
        if spec.get("tty"):
            stage = "controlling terminal"
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        stage = "chdir"
        os.chdir(spec["workdir"])
        if spec["isolation"] == "namespace":
            drop_capabilities()
        if spec.get("uid") is not None:
            stage = "set user"  # the image's User: after the capabilities, before exec
            os.setgroups([])
            os.setgid(spec["gid"])
            os.setuid(spec["uid"])
        if spec.get("probe"):
            os._exit(0)
        stage = "exec"
        argv: list[str] = spec["argv"]
        os.execvpe(argv[0], argv, spec["env"])
    except SetupError as exc:
        failure = {"stage": exc.stage, "errno": exc.errno, "message": exc.message}
    except OSError as exc:
        err = exc.errno or errno.EIO
        failure = {"stage": stage, "errno": err, "message": os.strerror(err)}
    except BaseException as exc:
        failure = {"stage": stage, "errno": errno.EIO, "message": repr(exc)}
    try:
        os.write(error_pipe, json.dumps(failure).encode())
    finally:
        os._exit(127 if failure["errno"] == errno.ENOENT else 126)


def kill_marked_processes(markers: list[str], timeout: float = 5.0) -> None:
    """SIGKILL every process whose environment holds one of ``markers`` (``NAME=value``).

    Directory mode has no PID namespace to tear down: this finds what left the process group
    (setsid, daemons) or outlived its exec. Returns once a pass finds none alive (a zombie's
    environment reads empty): SIGKILL is delivered asynchronously, and a process may fork
    while we look. Linux only; elsewhere the process-group kills must do.
    """
    if not markers or not os.path.isdir("/proc"):
        return
    wanted = {marker.encode() for marker in markers}
    deadline = time.monotonic() + timeout
    while True:
        found = False
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as environ:
                    variables = environ.read().split(b"\0")
            except OSError:
                continue
            if wanted.intersection(variables):
                found = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(name), signal.SIGKILL)
        if not found or time.monotonic() > deadline:
            return
        time.sleep(0.005)


class Launcher:
    def __init__(self, spec: dict[str, Any], report_fd: int) -> None:
        self.spec = spec
        self.report_fd = report_fd
        self.child: int | None = None
        self.reaping = False
        self.is_main = spec["action"] == "init"

    def on_signal(self, signum: int, _frame: object) -> None:
        child = self.child
        if child is None:
            os._exit(128 + signum)  # nothing started yet
        if self.reaping:
            return  # the target is already dead; we are about to exit
        if signum == KILL_SIGNAL:
            if self.is_main:
                kill_marked_processes(self.spec.get("markers", []))
            self.signal_group(child, signal.SIGKILL)
        elif self.is_main:
            # SIGTERM goes to the main process only, as under Docker and Kubernetes. In a PID
            # namespace it lands only if PID 1 installed a handler.
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)
        else:
            self.signal_group(child, signal.SIGTERM)

    @staticmethod
    def signal_group(child: int, signum: int) -> None:
        # SIGKILL for PID 1 of a namespace takes the whole namespace down with it.
        try:
            os.killpg(child, signum)
        except ProcessLookupError:
            # Not a group leader yet (between fork and setsid): signal the process itself.
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    def report(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        try:
            while data:
                data = data[os.write(self.report_fd, data) :]
        except OSError:
            pass  # the emulator stopped listening (a cancelled exec); it kills us next
        finally:
            os.close(self.report_fd)

    def run(self) -> NoReturn:
        spec = self.spec
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(KILL_SIGNAL, self.on_signal)
        set_parent_death_signal(KILL_SIGNAL)
        if os.getppid() != spec["parent_pid"]:
            os._exit(137)  # the emulator died before we could notice
        try:
            join_cgroups(spec.get("cgroup_procs", []))  # before entering: /sys is the host's
            if spec["action"] == "init" and spec["isolation"] == "namespace":
                check(libc().unshare(CLONE_NEWPID), "unshare(pid)")
            elif spec["action"] == "exec" and spec["isolation"] == "namespace":
                enter_namespaces(spec)
            read_end, write_end = os.pipe()  # close-on-exec: EOF means execve succeeded
            if hasattr(os, "pidfd_open"):
                spec["launcher_pidfd"] = os.pidfd_open(os.getpid())
            pid = os.fork()
        except SetupError as exc:
            self.report({"error": {"stage": exc.stage, "errno": exc.errno, "message": exc.message}})
            os._exit(1)
        except OSError as exc:
            err = exc.errno or errno.EIO
            stage = "fork" if err == errno.ENOMEM else "launch"  # ENOMEM: its PID 1 is gone
            self.report({"error": {"stage": stage, "errno": err, "message": os.strerror(err)}})
            os._exit(1)
        if pid == 0:
            os.close(read_end)
            run_child(spec, write_end)
        self.child = pid
        os.close(write_end)
        # The target's stdio must reach EOF when the target closes it, not when we exit.
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        failure = b""
        while chunk := os.read(read_end, 65536):
            failure += chunk
        os.close(read_end)
        if failure:
            self.report({"error": json.loads(failure)})
        else:
            self.report({"pid": pid})
        os._exit(self.wait_child(pid))

    def wait_child(self, pid: int) -> int:
        if hasattr(os, "waitid"):
            # Wait without reaping: until we reap, the PID (and process group ID) cannot be
            # reused, so a late kill request can never hit an unrelated process.
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            if self.spec["action"] == "init" and self.spec["isolation"] == "directory":
                # Like a container: when the main process ends, what it started ends too.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                kill_marked_processes(self.spec.get("markers", []))
        self.reaping = True
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        return code if code >= 0 else 128 - code


def main() -> NoReturn:
    spec_fd, report_fd, parent_pid = (int(arg) for arg in sys.argv[1:4])
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    raw = b""
    while chunk := os.read(spec_fd, 1 << 20):
        raw += chunk
    os.close(spec_fd)
    os.set_inheritable(report_fd, False)
    spec: dict[str, Any] = json.loads(raw)
    spec["parent_pid"] = parent_pid
    for key in ("target_pidfd", "netns_fd"):
        if spec.get(key) is not None:
            os.set_inheritable(spec[key], False)
    libc()  # load before entering a sandbox, where the host's library paths may be masked
    Launcher(spec, report_fd).run()


if __name__ == "__main__":
    main()
