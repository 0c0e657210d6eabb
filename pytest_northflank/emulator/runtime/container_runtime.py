"""The emulator's container runtime: starts and stops sandboxes (namespace or directory isolation),
with their images, limits and network. (About 530 lines: the start-up order of those parts is
the point of this module, and reads best in one place.)"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from pytest_northflank.emulator.images.config import resolve_user, sandbox_env
from pytest_northflank.emulator.runtime.container import (
    Container,
    IsolationMode,
    _remove_tree,
    directory_markers,
)
from pytest_northflank.emulator.runtime.errors import LauncherSilent
from pytest_northflank.emulator.runtime.host_view import host_view
from pytest_northflank.emulator.runtime.limits import (
    DEFAULT_MAX_PROCESSES,
    LimitEnforcer,
    LimitSetting,
    SandboxLimits,
)
from pytest_northflank.emulator.runtime.network import Attachment, SandboxNetwork
from pytest_northflank.emulator.runtime.spawn_thread import Spawner
from pytest_northflank.emulator.runtime.start_in_sandbox import (
    Report,
    launch_error,
    popen_launcher,
    read_report,
    spec_pipe,
    terminate_launcher,
)
from pytest_northflank.emulator.runtime.state_dirs import make_state_dir, mark_owner, reclaim_stale
from pytest_northflank.emulator.runtime.validate import check_argv, check_env
from pytest_northflank.errors import EmulatorError

if TYPE_CHECKING:  # the runtime runs on the standard library alone (httpx is for pulling)
    from pytest_northflank.emulator.images.store import Image

IsolationSetting = Literal["auto", "namespace", "directory"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Directories a sandbox cannot work without; they must be on the root filesystem.
USERLAND_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib")
START_TIMEOUT = 10.0
PATIENT_PROBE_TIMEOUT = 60.0

_probe_lock = threading.Lock()
_probe_result: tuple[bool, str] | None = None


def probe_namespaces() -> tuple[bool, str]:
    """Whether namespace isolation works here, and why not; tried for real once per process."""
    global _probe_result
    with _probe_lock:
        if _probe_result is None:
            _probe_result = _probe()
        return _probe_result


def _probe() -> tuple[bool, str]:
    if not sys.platform.startswith("linux"):
        return False, f"Linux namespaces are not available on {sys.platform}"
    if not hasattr(os, "pidfd_open"):
        return False, "os.pidfd_open() is missing"
    root_device = os.stat("/").st_dev
    for path in USERLAND_DIRS:
        # An overlay of "/" does not include other filesystems mounted below it.
        if os.path.isdir(path) and os.stat(path).st_dev != root_device:
            return False, f"{path} is a separate filesystem, which an overlay of / would not show"
    # A machine busy enough to keep the launcher silent for START_TIMEOUT is no reason to fall
    # back to the much weaker directory isolation for the whole run: ask once more, patiently.
    for timeout in (START_TIMEOUT, PATIENT_PROBE_TIMEOUT):
        directory = Path(tempfile.mkdtemp(prefix="pytest-northflank-probe-"))
        try:
            view = host_view(str(directory))
            spec = {
                "action": "init",
                "isolation": "namespace",
                "probe": True,  # build the sandbox root, then exit instead of exec
                "sandbox_dir": str(directory),
                "masked_dirs": view.masked_dirs,
                "hidden_files": view.hidden_files,
                "copied_links": view.copied_links,
                "hostname": "probe",
                "argv": ["true"],
                "env": {"PATH": DEFAULT_PATH},
                "workdir": "/",
            }
            launcher, report = _launch(
                spec, lambda job: job(), stdout=subprocess.DEVNULL, timeout=timeout
            )
            status = terminate_launcher(launcher)
            break
        except LauncherSilent as exc:
            if timeout == PATIENT_PROBE_TIMEOUT:
                return False, f"could not run the probe: {exc}"
        except (OSError, EmulatorError) as exc:
            return False, f"could not run the probe: {exc}"
        finally:
            _remove_tree(directory)
    if report is None:
        return False, f"the probe launcher exited with status {status}"
    if "error" in report:
        failure = report["error"]
        return False, f"{failure['stage']} failed: {failure['message']}"
    if status != 0:
        return False, f"the probe sandbox exited with status {status}"
    return True, "Linux mount+PID namespaces with a copy-on-write overlay of / are available"


def _launch(
    spec: dict[str, Any],
    run: Callable[[Callable[[], subprocess.Popen[bytes]]], subprocess.Popen[bytes]],
    *,
    stdout: int,
    stderr: int = subprocess.DEVNULL,
    timeout: float = START_TIMEOUT,
    kept_fds: tuple[int, ...] = (),
) -> tuple[subprocess.Popen[bytes], Report | None]:
    """Start a launcher for ``spec`` through ``run`` and wait for its report.

    ``stdout``/``stderr`` are handed over: closed here once the launcher has them;
    ``kept_fds`` are passed too and stay open.
    """
    handed_over = [fd for fd in (stdout, stderr) if fd >= 0]
    try:
        spec_fd = spec_pipe(spec)
        handed_over.append(spec_fd)
        report_read, report_write = os.pipe()
        handed_over.append(report_write)
    except BaseException:
        for fd in handed_over:
            os.close(fd)
        raise

    def start_launcher() -> subprocess.Popen[bytes]:
        return popen_launcher(
            spec_fd,
            report_write,
            stdio=(subprocess.DEVNULL, stdout, stderr),
            pass_fds=(spec_fd, report_write, *kept_fds),
            handed_over=handed_over,
        )

    try:
        launcher = run(start_launcher)
    except BaseException:
        os.close(report_read)
        raise
    try:
        return launcher, read_report(report_read, timeout)
    except BaseException:
        terminate_launcher(launcher)
        raise
    finally:
        os.close(report_read)


def _hostname_for(sandbox_id: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", sandbox_id.lower()).strip("-")[:63].strip("-")
    return name or "sandbox"


def _slug_for(sandbox_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", sandbox_id)[:40].strip(".") or "sandbox"


class ContainerRuntime:
    """Runs the emulator's sandboxes as local containers.

    ``isolation``: ``"namespace"`` (mount+PID+UTS+IPC namespaces with a copy-on-write overlay
    of the host root; needs root on Linux), ``"directory"`` (a per-sandbox directory, own
    HOME/TMPDIR and process groups; works anywhere), or ``"auto"``: namespaces when a real
    trial run works, else directories. :attr:`isolation` and :attr:`isolation_reason` say what
    was chosen and why. ``state_dir`` holds the per-sandbox directories (default: a new
    temporary directory, removed by :meth:`shutdown`).

    Thread-safe. :meth:`start` blocks for a few tens of milliseconds; from an event loop prefer
    ``await asyncio.to_thread(runtime.start, ...)``. Sandboxes die with the process that owns
    the runtime, even when it is SIGKILLed.
    """

    def __init__(
        self,
        isolation: IsolationSetting = "auto",
        state_dir: Path | None = None,
        *,
        max_log_lines: int = 10_000,
        max_processes: int | None = DEFAULT_MAX_PROCESSES,
        limits: LimitSetting = "auto",
    ) -> None:
        if isolation not in get_args(IsolationSetting):
            raise EmulatorError(
                f"isolation must be 'auto', 'namespace' or 'directory', got {isolation!r}"
            )
        if not isinstance(max_log_lines, int) or max_log_lines < 1:
            raise EmulatorError(f"max_log_lines must be a positive integer, got {max_log_lines!r}")
        self.isolation: IsolationMode
        self.isolation_reason: str
        if isolation == "directory":
            self.isolation, self.isolation_reason = "directory", "directory isolation was requested"
        else:
            works, why = probe_namespaces()
            if works:
                self.isolation, self.isolation_reason = "namespace", why
            elif isolation == "namespace":
                raise EmulatorError(f"namespace isolation is not available here: {why}")
            else:
                self.isolation = "directory"
                self.isolation_reason = (
                    f"namespaces unavailable ({why}); using per-sandbox directories"
                )
        SandboxLimits(max_processes=max_processes)  # checks it
        self.max_processes = max_processes
        self.network: SandboxNetwork | None = None
        self._owns_state_dir = state_dir is None
        if state_dir is None:
            self.state_dir = make_state_dir()
        else:
            self.state_dir = Path(state_dir).absolute()
            try:
                self.state_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise EmulatorError(f"cannot create state_dir {self.state_dir}: {exc}") from exc
            reclaim_stale(self.state_dir)
        if self.isolation == "namespace" and re.search(r"[,:\\]", str(self.state_dir)):
            raise EmulatorError(
                f"state_dir {self.state_dir} contains ',', ':' or '\\', which overlayfs "
                "mount options cannot carry"
            )
        if self.isolation == "namespace":
            try:
                self.network = SandboxNetwork()
            except EmulatorError as exc:
                if isolation == "namespace":
                    why = f"namespace isolation is not available here: {exc}"
                    raise EmulatorError(why) from None
                self.isolation = "directory"
                self.isolation_reason = (
                    f"network namespaces unavailable ({exc}); using per-sandbox directories"
                )
        self._host_view = host_view(str(self.state_dir))
        try:
            self._limits = LimitEnforcer(limits)
        except EmulatorError:
            if self._owns_state_dir:
                _remove_tree(self.state_dir)
            raise
        #: how sandbox limits are enforced ("cgroup v1", "cgroup v2" or "rlimit") and what
        #: that means
        self.limits_mechanism, self.limits_reason = self._limits.mechanism, self._limits.reason
        self._max_log_lines = max_log_lines
        self._lock = threading.Lock()
        self._closed = False
        self._containers: dict[str, Container] = {}
        self._starting: set[str] = set()
        self._spawner = Spawner(name="nf-emulator-spawner")
        atexit.register(self.shutdown)

    def __enter__(self) -> ContainerRuntime:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<ContainerRuntime {self.isolation} containers={len(self._containers)}>"

    def containers(self) -> list[Container]:
        """The containers started and not stopped yet (running or exited)."""
        with self._lock:
            return list(self._containers.values())

    def start(
        self,
        sandbox_id: str,
        argv: list[str],
        env: Mapping[str, str],
        image: Image | None = None,
        *,
        memory_mb: int | None = None,
        names: tuple[str, ...] = (),
    ) -> Container:
        """Start a sandbox whose main process runs ``argv`` with ``env``.

        The sandbox may use ``memory_mb`` MiB (None: no limit) and :attr:`max_processes`.

        In namespace mode it gets its own network namespace on the emulator's private bridge
        (:attr:`network`); ``names`` (for example the service id) resolve to its address in
        every sandbox, as does its hostname.

        Returns once ``argv`` has been executed (in namespace mode as PID 1 of the sandbox).
        Every process gets ``env`` over the defaults ``PATH``, ``HOME`` (``/root``;
        ``<dir>/home`` in directory mode), ``HOSTNAME`` (namespace) or ``TMPDIR`` (directory);
        nothing of the emulator's own environment. With ``image`` (namespace isolation only)
        the sandbox's root is the image's layers instead of the host's userland, and the
        image's ``Env``, ``WorkingDir`` and ``User`` apply to the main process and every
        exec. Raises :class:`CommandNotFound` /
        :class:`CommandNotExecutable` when ``argv[0]`` cannot be executed (nothing is left
        behind), and :class:`EmulatorError` for bad input, a duplicate running ``sandbox_id``,
        or a runtime that is shut down.
        """
        if not isinstance(sandbox_id, str) or not sandbox_id or not sandbox_id.isprintable():
            raise EmulatorError(
                f"sandbox_id must be a non-empty printable string, got {sandbox_id!r}"
            )
        argv = check_argv(argv, "argv")
        user_env = check_env(env, "env")
        limits = SandboxLimits(memory_mb, self.max_processes)
        with self._lock:
            if self._closed:
                raise EmulatorError("the container runtime is shut down")
            if sandbox_id in self._containers or sandbox_id in self._starting:
                raise EmulatorError(f"sandbox {sandbox_id!r} already exists")
            self._starting.add(sandbox_id)
        directory = self.state_dir / f"{_slug_for(sandbox_id)}-{secrets.token_hex(4)}"
        try:
            directory.mkdir()
            mark_owner(directory)
            container = self._start(sandbox_id, argv, user_env, directory, image, limits, names)
        except BaseException:
            with contextlib.suppress(EmulatorError):  # the start error matters more
                self._limits.release(directory.name)
            _remove_tree(directory)
            raise
        finally:
            with self._lock:
                self._starting.discard(sandbox_id)
        with self._lock:
            closed = self._closed
            if not closed:
                self._containers[sandbox_id] = container
        if closed:
            container.stop(grace=0)
            raise EmulatorError("the container runtime is shut down")
        return container

    def _start(
        self,
        sandbox_id: str,
        argv: list[str],
        user_env: dict[str, str],
        directory: Path,
        image: Image | None,
        limits: SandboxLimits,
        names: tuple[str, ...],
    ) -> Container:
        hostname = _hostname_for(sandbox_id)
        attachment: Attachment | None = None
        if self.network is not None:
            # The one network hook: a namespace made and wired before the launcher joins it.
            attachment = self.network.attach(sandbox_id, (hostname, *names))
        try:
            container = self._start_attached(
                sandbox_id, argv, user_env, directory, image, limits, hostname, attachment
            )
        except BaseException:
            if attachment is not None and self.network is not None:
                self.network.detach(attachment)
            raise
        container.network = attachment
        return container

    def _start_attached(
        self,
        sandbox_id: str,
        argv: list[str],
        user_env: dict[str, str],
        directory: Path,
        image: Image | None,
        limits: SandboxLimits,
        hostname: str,
        attachment: Attachment | None,
    ) -> Container:
        spec: dict[str, Any] = {"action": "init", "isolation": self.isolation, "argv": argv}
        if attachment is not None:
            spec["netns_fd"] = attachment.netns_fd
            spec["bind_files"] = [[str(attachment.hosts_file), "/etc/hosts"]]
        user: tuple[int, int] | None = None
        if image is not None:
            if self.isolation != "namespace":
                raise EmulatorError(
                    f"image {image.name} needs namespace isolation; directory isolation runs "
                    "this machine's userland only"
                )
            workdir, env, user, image_spec = _image_root(image, hostname, user_env)
            spec |= {"sandbox_dir": str(directory), "hostname": hostname, **image_spec}
            if user is not None:
                spec["uid"], spec["gid"] = user
        elif self.isolation == "namespace":
            workdir = "/"
            env = {"PATH": DEFAULT_PATH, "HOME": "/root", "HOSTNAME": hostname, **user_env}
            spec |= {
                "sandbox_dir": str(directory),
                "masked_dirs": self._host_view.masked_dirs,
                "hidden_files": self._host_view.hidden_files,
                "copied_links": self._host_view.copied_links,
                "hostname": hostname,
            }
        else:
            hostname = os.uname().nodename
            home, tmp, work = (directory / name for name in ("home", "tmp", "work"))
            for path in (home, tmp, work):
                path.mkdir()
            workdir = str(work)
            env = {"PATH": DEFAULT_PATH, "HOME": str(home), "TMPDIR": str(tmp), **user_env}
            spec["markers"] = directory_markers(directory)
        limits_spec, group = self._limits.prepare(directory.name, limits)
        spec |= {"env": env, "workdir": workdir, **limits_spec}
        stdout_read, stdout_write = os.pipe()
        try:
            stderr_read, stderr_write = os.pipe()
        except BaseException:
            os.close(stdout_read)
            os.close(stdout_write)
            raise
        started = False
        try:
            launcher, report = _launch(
                spec,
                lambda job: self._spawner.submit(job).result(),
                stdout=stdout_write,
                stderr=stderr_write,
                kept_fds=() if spec.get("netns_fd") is None else (spec["netns_fd"],),
            )
            if report is None or "error" in report:
                terminate_launcher(launcher)
                raise launch_error(
                    report, launcher, sandbox_id=sandbox_id, argv0=argv[0], what="the main process"
                )
            container = Container(
                sandbox_id=sandbox_id,
                isolation=self.isolation,
                env=env,
                workdir=workdir,
                directory=directory,
                hostname=hostname,
                main=launcher,
                pid=report["pid"],
                stdout_fd=stdout_read,
                stderr_fd=stderr_read,
                spawner=self._spawner,
                max_log_lines=self._max_log_lines,
                on_stopped=self._forget,
                user=user,
                limits_spec=limits_spec,
                group=group,
            )
            started = True
            return container
        finally:
            if not started:
                os.close(stdout_read)
                os.close(stderr_read)

    def _forget(self, container: Container) -> None:
        with self._lock:
            if self._containers.get(container.sandbox_id) is container:
                del self._containers[container.sandbox_id]
        if container.network is not None and self.network is not None:
            self.network.detach(container.network)

    def shutdown(self, grace: float = 2.0) -> None:
        """Stop every container (SIGTERM, SIGKILL after ``grace``, in parallel); idempotent.

        Afterwards :meth:`start` refuses; a state directory the runtime created is removed.
        """
        with self._lock:
            already_closed = self._closed
            self._closed = True
            containers = list(self._containers.values())
        if already_closed and not containers:
            return
        atexit.unregister(self.shutdown)
        deadline = time.monotonic() + max(grace, 0.0)
        stopping = [container for container in containers if container._begin_stop()]
        errors: list[EmulatorError] = []
        for container in containers:
            try:
                if container in stopping:
                    container._finish_stop(deadline)
                else:
                    container.stop()
            except EmulatorError as exc:
                errors.append(exc)
        self._spawner.close()
        try:
            self._limits.close()
        except EmulatorError as exc:
            errors.append(exc)
        if self.network is not None:
            self.network.close()
        if self._owns_state_dir:
            try:
                _remove_tree(self.state_dir)
            except EmulatorError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def _image_root(
    image: Image, hostname: str, user_env: dict[str, str]
) -> tuple[str, dict[str, str], tuple[int, int] | None, dict[str, Any]]:
    """Working directory, environment, user and launcher spec of a sandbox made from ``image``."""
    config = image.config
    layers_top_first = list(reversed(image.layers))
    try:
        uid, gid, home = resolve_user(config.user, layers_top_first)
    except LookupError as exc:
        raise EmulatorError(f"image {image.name}: {exc}") from None
    env = sandbox_env(config, hostname, user_env)
    if home and "HOME" not in config.env and "HOME" not in user_env:
        env["HOME"] = home
    workdir = config.workdir if config.workdir.startswith("/") else "/" + config.workdir
    spec = {
        "lower_dirs": [str(layer) for layer in layers_top_first],
        "masked_dirs": (),
        "hidden_files": (),
        # As container engines do: the host's name resolution, whatever the image has.
        "copied_links": ("/etc/resolv.conf", "/etc/hosts"),
    }
    return workdir, env, (uid, gid) if config.user else None, spec
