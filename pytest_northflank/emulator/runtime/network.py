"""The emulator's private network: one network namespace per sandbox, joined by a bridge.

Everything lives in network namespaces this module creates; the host's own namespace gets no
interface, route or address. The bridge sits in a hub namespace made for it; each sandbox gets
its own namespace with a loopback and one end of a veth pair (``eth0``, an address of
:data:`SUBNET`), the other end enslaved to the bridge. Nothing routes out of the hub, so a
sandbox reaches the other sandboxes and nothing else: not the host's loopback services (the
emulator's API included), not the outside world.

Names resolve through a hosts file per sandbox (bind-mounted over ``/etc/hosts``), rewritten
in place whenever a sandbox joins or leaves.

Network namespaces belong to threads, not processes: one worker thread (:attr:`_worker`)
makes namespaces (``unshare``) and sockets inside them (``setns`` there and back), so the test
process or the emulator reaches a sandbox's ports without any listener on the host.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pytest_northflank.errors import EmulatorError

CLONE_NEWNET = 0x40000000
SUBNET = ipaddress.ip_network("10.244.0.0/16")
BRIDGE = "nfbr0"
IP_TIMEOUT = 10.0

_T = TypeVar("_T")

_HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "# sandboxes of this emulator (rewritten when one starts or stops)\n"
)


@dataclass
class Attachment:
    """A sandbox's place on the network."""

    name: str  #: the sandbox id
    names: tuple[str, ...]  #: what other sandboxes may call it (first: its hostname)
    address: str  #: its address on the bridge
    netns_fd: int  #: its network namespace (closed by :meth:`SandboxNetwork.detach`)
    hosts_file: Path  #: bind-mounted over ``/etc/hosts`` inside
    veth: str  #: the bridge-side end of its veth pair
    closed: bool = field(default=False, repr=False)


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.unshare.argtypes = [ctypes.c_int]
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


class SandboxNetwork:
    """The bridge and the sandboxes on it; thread-safe. Linux, root only.

    Raises :class:`EmulatorError` when a namespace, the bridge or a veth pair cannot be made.
    """

    def __init__(self) -> None:
        self._libc = _libc()
        # Outside the state directory, whose contents belong to the sandboxes.
        self._hosts_dir = Path(tempfile.mkdtemp(prefix="pytest-northflank-hosts-"))
        self._lock = threading.Lock()
        self._attached: dict[str, Attachment] = {}
        self._next_host = 2  # .0.0 is the network, .0.1 is left for a gateway
        self._free: list[str] = []
        self._counter = 0
        self._closed = False
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nf-emulator-netns")
        try:
            self._host_netns = self._on_worker(lambda: os.open("/proc/thread-self/ns/net", 0))
            self._hub = self._on_worker(self._new_namespace)
            self._ip(self._hub, [f"link add {BRIDGE} type bridge", f"link set {BRIDGE} up"])
        except BaseException:
            self._worker.shutdown(wait=True)
            shutil.rmtree(self._hosts_dir, ignore_errors=True)
            raise

    # -- namespaces and sockets ----------------------------------------------------------------

    def _on_worker(self, job: Callable[[], _T]) -> _T:
        return self._worker.submit(job).result()

    def _check(self, result: int, what: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise EmulatorError(f"{what} failed: {os.strerror(err)}")

    def _new_namespace(self) -> int:
        """On the worker: a fresh network namespace (only loopback, down), as an fd."""
        self._check(self._libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            return os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        finally:
            self._check(self._libc.setns(self._host_netns, CLONE_NEWNET), "setns back")

    def socket_in(self, attachment: Attachment, family: int = socket.AF_INET) -> socket.socket:
        """A new TCP socket inside the sandbox's network namespace (non-blocking)."""

        def make() -> socket.socket:
            if attachment.closed:
                raise EmulatorError(f"sandbox {attachment.name!r} is not on the network")
            self._check(self._libc.setns(attachment.netns_fd, CLONE_NEWNET), "setns")
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            finally:
                self._check(self._libc.setns(self._host_netns, CLONE_NEWNET), "setns back")
            sock.setblocking(False)
            return sock

        return self._on_worker(make)

    def _ip(self, netns_fd: int, commands: list[str], *extra_fds: int) -> None:
        """Run ``ip -batch`` inside the namespace ``netns_fd``."""
        argv = ["nsenter", f"--net=/proc/self/fd/{netns_fd}", "ip", "-batch", "-"]
        try:
            done = subprocess.run(
                argv,
                input="\n".join(commands).encode() + b"\n",
                pass_fds=(netns_fd, *extra_fds),
                capture_output=True,
                timeout=IP_TIMEOUT,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmulatorError(f"could not configure the sandbox network: {exc}") from None
        if done.returncode != 0:
            problem = done.stderr.decode(errors="replace").strip()
            raise EmulatorError(f"could not configure the sandbox network: {problem}")

    # -- sandboxes -----------------------------------------------------------------------------

    def attach(self, name: str, names: tuple[str, ...]) -> Attachment:
        """Give sandbox ``name`` a namespace, an address and a hosts file; ``names`` resolve
        to its address in every sandbox (its own hostname first)."""
        with self._lock:
            if self._closed:
                raise EmulatorError("the sandbox network is closed")
            address = self._free.pop() if self._free else self._take_address()
            self._counter += 1
            veth = f"nfv{self._counter}"
        netns_fd = -1
        try:
            netns_fd = self._on_worker(self._new_namespace)
            self._ip(
                self._hub,
                [
                    f"link add {veth} type veth peer name eth0 netns /proc/self/fd/{netns_fd}",
                    f"link set {veth} master {BRIDGE} up",
                ],
                netns_fd,
            )
            self._ip(
                netns_fd,
                [
                    "link set lo up",
                    f"addr add {address}/{SUBNET.prefixlen} dev eth0",
                    "link set eth0 up",
                ],
            )
            hosts = self._hosts_dir / f"{veth}.hosts"
            hosts.touch(mode=0o644)
        except BaseException:
            if netns_fd >= 0:
                os.close(netns_fd)
            with self._lock:
                self._free.append(address)
            raise
        attachment = Attachment(name, names, address, netns_fd, hosts, veth)
        with self._lock:
            self._attached[name] = attachment
            self._rewrite_hosts()
        return attachment

    def _take_address(self) -> str:
        host = self._next_host
        if host >= SUBNET.num_addresses - 1:
            raise EmulatorError(f"no address left in {SUBNET}")
        self._next_host += 1
        return str(SUBNET.network_address + host)

    def detach(self, attachment: Attachment) -> None:
        """Take the sandbox off the network (idempotent). Its namespace, and with it both ends
        of its veth pair, go once its last process is gone."""
        with self._lock:
            if attachment.closed:
                return
            attachment.closed = True
            if self._attached.get(attachment.name) is attachment:
                del self._attached[attachment.name]
            self._free.append(attachment.address)
            self._rewrite_hosts()
        # Not while the worker may be inside it: setns on a closed fd would fail.
        self._on_worker(lambda: os.close(attachment.netns_fd))
        with contextlib.suppress(OSError):
            attachment.hosts_file.unlink()
        # A namespace still held by a process (a kill in flight) keeps the veth: drop it now.
        with contextlib.suppress(EmulatorError):
            if not self._closed:
                self._ip(self._hub, [f"link del {attachment.veth}"])

    def resolve(self, name: str) -> str | None:
        """The address of the sandbox called ``name`` (an id or one of its names)."""
        with self._lock:
            for attachment in self._attached.values():
                if name == attachment.name or name in attachment.names:
                    return attachment.address
        return None

    def _rewrite_hosts(self) -> None:
        """Every sandbox's hosts file, in place (a bind mount pins the inode)."""
        lines = [
            f"{a.address}\t{' '.join(dict.fromkeys((*a.names, a.name)))}\n"
            for a in self._attached.values()
        ]
        content = (_HOSTS_HEADER + "".join(lines)).encode()
        for attachment in self._attached.values():
            with contextlib.suppress(OSError):
                fd = os.open(attachment.hosts_file, os.O_WRONLY)
                try:
                    os.pwrite(fd, content, 0)
                    os.ftruncate(fd, len(content))
                finally:
                    os.close(fd)

    def close(self) -> None:
        """Drop the bridge's namespace and the worker thread (sandboxes are stopped first)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            attachments = list(self._attached.values())
        for attachment in attachments:
            self.detach(attachment)
        for fd in (self._hub, self._host_netns):
            self._worker.submit(os.close, fd).result()
        self._worker.shutdown(wait=True)
        shutil.rmtree(self._hosts_dir, ignore_errors=True)
