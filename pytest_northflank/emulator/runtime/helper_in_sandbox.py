"""The exec helper: one long-lived process per sandbox that forks its commands.

Run as ``python -I -S helper_in_sandbox.py SPEC_FD REPORT_FD PARENT_PID`` (``exec_helper`` is
its parent side). Starting a Python launcher per exec costs tens of milliseconds; this
process enters the sandbox once (its namespaces, in namespace mode) and then forks each
command, which costs about one millisecond. It reuses the launcher's code (``in_sandbox``),
imported from beside this file before anything of the host is masked.

Protocol, on the SOCK_SEQPACKET socket CONTROL_FD (one JSON object per message):

* in: ``{"op": "exec", "id", "spec"}`` with the command's stdin, stdout and stderr attached
  (SCM_RIGHTS); out: ``{"id", "pid"}`` once ``execve`` succeeded, else ``{"id", "error"}``.
* out, later: ``{"exit": pid, "code": N}`` (128+N when killed by signal N).
* in: ``{"op": "signal", "pid", "signal"}``: signal the command's process group, as long as
  the command is not reaped yet (so a PID can never be reused under us).

End of file on the socket (the emulator closed it or died) ends the helper; its commands
then die of their parent-death signal.
"""

from __future__ import annotations

import array
import contextlib
import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn, TypeAlias

    Started: TypeAlias = "tuple[int, int] | None"  # a started command: (pid, pidfd)

    from pytest_northflank.emulator.runtime import in_sandbox
else:  # beside this file: -I keeps its directory off sys.path, and the package is not needed
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import in_sandbox

MAX_MESSAGE = 1 << 20

STDIO_FDS = 3


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_program(name: str, search: str) -> tuple[str | None, int]:
    """Where ``execvpe`` would find ``name`` on ``search`` (a PATH), or why not (errno)."""
    if "/" in name:
        return name, 0
    err = errno.ENOENT
    for directory in search.split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate, 0
            err = errno.EACCES
    return None, err


class ControlClosed(Exception):
    """The emulator closed the control socket (or died)."""


class Helper:
    def __init__(self, spec: dict[str, Any], control: socket.socket) -> None:
        self.spec = spec
        self.control = control
        self.children: dict[int, int] = {}  # pid -> pidfd, until reaped
        self.popens: dict[int, subprocess.Popen[bytes]] = {}

    def send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the emulator is gone: EOF ends us next
            self.control.send(json.dumps(message).encode())

    def serve(self) -> NoReturn:
        poller = select.poll()
        poller.register(self.control.fileno(), select.POLLIN)
        by_pidfd: dict[int, int] = {}
        while True:
            for fd, _ in poller.poll():
                if fd == self.control.fileno():
                    try:
                        started = self.receive()
                    except ControlClosed:
                        os._exit(0)
                    if started is not None:
                        pid, pidfd = started
                        by_pidfd[pidfd] = pid
                        poller.register(pidfd, select.POLLIN)
                else:
                    poller.unregister(fd)
                    self.reap(by_pidfd.pop(fd))

    def receive(self) -> Started:
        """Handle one request; (pid, pidfd) for a started command."""
        fds = array.array("i")
        try:
            data, ancillary, _, _ = self.control.recvmsg(
                MAX_MESSAGE, socket.CMSG_SPACE(STDIO_FDS * fds.itemsize), socket.MSG_CMSG_CLOEXEC
            )
        except InterruptedError:
            return None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % fds.itemsize
                fds.frombytes(payload[:usable])
        if not data:
            raise ControlClosed
        request = json.loads(data)
        if request["op"] == "signal":
            self.signal(request["pid"], request["signal"])
            return None
        try:
            return self.start(request, list(fds))
        finally:
            for fd in fds:
                os.close(fd)

    def start(self, request: dict[str, Any], stdio: list[int]) -> Started:
        spec = {**self.spec, **request["spec"], "action": "exec"}
        if spec["isolation"] == "namespace" and not spec.get("tty"):
            return self.spawn(request["id"], spec, stdio)
        return self.fork(request["id"], spec, stdio)

    def spawn(self, request_id: int, spec: dict[str, Any], stdio: list[int]) -> Started:
        """Start the command with subprocess's vfork: no Python runs in the child, so it
        costs a tenth of a fork. The helper already sits in the sandbox's directory with its
        capabilities dropped; the command gets no parent-death signal, which namespace mode
        does not need (the sandbox's PID 1 takes every process with it)."""
        identity: dict[str, Any] = {}
        if spec.get("uid") is not None:  # the image's User (subprocess then forks)
            identity = {"user": spec["uid"], "group": spec["gid"], "extra_groups": []}
        try:
            child = subprocess.Popen(
                spec["argv"],
                stdin=stdio[0],
                stdout=stdio[1],
                stderr=stdio[2],
                env=spec["env"],  # PATH is looked up in it, as execvpe does
                close_fds=False,  # every fd of ours is close-on-exec
                start_new_session=True,
                restore_signals=True,  # SIGPIPE and SIGXFSZ back to their defaults
                **identity,
            )
        except OSError as exc:
            err = exc.errno or errno.EIO
            # No process for another (the sandbox's limit), or its PID 1 gone: the fork failed.
            stage = "fork" if err in (errno.EAGAIN, errno.ENOMEM) else "exec"
            error = {"stage": stage, "errno": err, "message": os.strerror(err)}
            self.send({"id": request_id, "error": error})
            return None
        # Kept until reaped: a Popen dropped while running is reaped by subprocess itself.
        self.popens[child.pid] = child
        pidfd = os.pidfd_open(child.pid)
        self.children[child.pid] = pidfd
        self.send({"id": request_id, "pid": child.pid})
        return child.pid, pidfd

    def fork(
        self, request_id: int, spec: dict[str, Any], stdio: list[int]
    ) -> tuple[int, int] | None:
        """Fork and finish in Python: a controlling terminal, a parent-death signal."""
        read_end, write_end = os.pipe()  # close-on-exec: EOF means execve succeeded
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(read_end)
            os.close(write_end)
            err = exc.errno or errno.EIO
            stage = "fork" if err == errno.ENOMEM else "launch"
            error = {"stage": stage, "errno": err, "message": os.strerror(err)}
            self.send({"id": request_id, "error": error})
            return None
        if pid == 0:
            try:
                os.close(read_end)
                self.control.close()
                for target, fd in enumerate(stdio[:STDIO_FDS]):
                    os.dup2(fd, target)
            except BaseException:
                os._exit(126)
            in_sandbox.run_child(spec, write_end)
        os.close(write_end)
        failure = b""
        while chunk := os.read(read_end, 65536):
            failure += chunk
        os.close(read_end)
        if failure:
            os.waitpid(pid, 0)
            self.send({"id": request_id, "error": json.loads(failure)})
            return None
        pidfd = os.pidfd_open(pid)
        self.children[pid] = pidfd
        self.send({"id": request_id, "pid": pid})
        return pid, pidfd

    def signal(self, pid: int, signum: int) -> None:
        if pid in self.children:
            in_sandbox.Launcher.signal_group(pid, signum)

    def reap(self, pid: int) -> None:
        pidfd = self.children.pop(pid)
        os.close(pidfd)
        popen = self.popens.pop(pid, None)
        if popen is not None:
            code = popen.wait()
        else:
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
        self.send({"exit": pid, "code": code if code >= 0 else 128 - code})


def main() -> NoReturn:
    spec_fd, report_fd, parent_pid = (int(arg) for arg in sys.argv[1:4])
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    raw = b""
    while chunk := os.read(spec_fd, 1 << 20):
        raw += chunk
    os.close(spec_fd)
    spec: dict[str, Any] = json.loads(raw)
    control = socket.socket(fileno=spec.pop("control_fd"))
    os.set_inheritable(control.fileno(), False)
    os.set_inheritable(report_fd, False)
    in_sandbox.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(137)  # the emulator died before we could notice
    in_sandbox.libc()  # load before entering a sandbox, where library paths may be masked
    report: dict[str, Any] = {"ready": True}
    try:
        # Before entering (/sys is the host's there): every command counts in the sandbox's
        # cgroups; where there are none, its rlimits apply to us and what we start.
        in_sandbox.join_cgroups(spec.get("cgroup_procs", []))
        in_sandbox.apply_rlimits(spec.get("rlimits", []))
        if spec["isolation"] == "namespace":
            in_sandbox.enter_namespaces(spec)
            os.close(spec.pop("target_pidfd"))
            os.chdir(spec["workdir"])
            in_sandbox.drop_capabilities()  # inherited by every command
    except in_sandbox.SetupError as exc:
        report = {"error": {"stage": exc.stage, "errno": exc.errno, "message": exc.message}}
    except OSError as exc:
        err = exc.errno or errno.EIO
        report = {"error": {"stage": "helper", "errno": err, "message": os.strerror(err)}}
    os.write(report_fd, json.dumps(report).encode())
    os.close(report_fd)
    if "error" in report:
        os._exit(1)
    # The commands' stdio must reach EOF when they close it, not when we exit.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    Helper(spec, control).serve()


if __name__ == "__main__":
    main()
