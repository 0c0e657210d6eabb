"""The emulator's container runtime, with real processes, namespaces and pseudo-terminals."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from emulator_testing import eventually

from pytest_northflank.emulator.runtime import (
    CommandNotExecutable,
    CommandNotFound,
    Container,
    ContainerRuntime,
    ExecProcess,
    probe_namespaces,
)
from pytest_northflank.emulator.runtime.host_view import IMAGE_ROOT, host_view
from pytest_northflank.errors import EmulatorError

T = TypeVar("T")

NAMESPACES_WORK, WHY_NOT = probe_namespaces()
needs_namespaces = pytest.mark.skipif(
    not NAMESPACES_WORK, reason=f"namespace isolation unavailable here: {WHY_NOT}"
)
ISOLATIONS = [pytest.param("namespace", marks=needs_namespaces), "directory"]
MARKER = "NF_RUNTIME_TEST_MARKER"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def marked_processes(marker: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose environment carries ``MARKER=marker``."""
    found = []
    for process in psutil.process_iter(["environ", "status"]):
        environ = process.info["environ"] or {}
        if environ.get(MARKER) == marker and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


def mounts_mentioning(path: Path) -> list[str]:
    """Mount entries of *any* process on the host that mention ``path``."""
    hits = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            mountinfo = (entry / "mountinfo").read_text()
        except OSError:
            continue
        hits += [f"{entry.name}: {line}" for line in mountinfo.splitlines() if str(path) in line]
    return hits


@dataclass
class Result:
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    chunks: list[tuple[str, bytes]] = field(default_factory=list)


async def collect(process: ExecProcess) -> Result:
    result = Result(exit_code=-1)
    async for stream, data in process.output():
        result.chunks.append((stream, data))
        if stream == "stdout":
            result.stdout += data
        else:
            result.stderr += data
    result.exit_code = await process.wait()
    return result


async def run_exec(
    container: Container,
    argv: list[str],
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> Result:
    process = await container.exec(argv, env=env)
    if stdin is not None:

        async def feed() -> None:
            await process.write(stdin)
            await process.close_stdin()

        _, result = await asyncio.gather(feed(), collect(process))
        return result
    await process.close_stdin()
    return await collect(process)


def sh(container: Container, script: str, **kwargs: Any) -> Result:
    return run(run_exec(container, ["sh", "-c", script], **kwargs))


@dataclass
class Harness:
    runtime: ContainerRuntime
    marker: str

    def start(
        self, argv: list[str] | None = None, env: Mapping[str, str] | None = None
    ) -> Container:
        sandbox_id = f"rt-{uuid.uuid4().hex[:12]}"
        return self.runtime.start(
            sandbox_id, argv or ["sleep", "infinity"], {MARKER: self.marker, **(env or {})}
        )


@pytest.fixture(params=ISOLATIONS)
def isolation(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def harness(isolation: str, tmp_path: Path) -> Iterator[Harness]:
    runtime = ContainerRuntime(isolation, state_dir=tmp_path / "state")  # type: ignore[arg-type]
    assert runtime.isolation == isolation
    marker = uuid.uuid4().hex
    try:
        yield Harness(runtime, marker)
    finally:
        runtime.shutdown()
    assert eventually(lambda: not marked_processes(marker)), marked_processes(marker)
    assert not list((tmp_path / "state").iterdir())


# -- isolation setting ----------------------------------------------------------------------


def test_directory_isolation_when_requested(tmp_path: Path) -> None:
    with ContainerRuntime("directory", state_dir=tmp_path) as runtime:
        assert runtime.isolation == "directory"
        assert "requested" in runtime.isolation_reason


def test_auto_isolation_follows_the_probe(tmp_path: Path) -> None:
    with ContainerRuntime("auto", state_dir=tmp_path) as runtime:
        assert runtime.isolation == ("namespace" if NAMESPACES_WORK else "directory")
        assert WHY_NOT in runtime.isolation_reason


def test_forced_namespace_isolation_works_or_says_why(tmp_path: Path) -> None:
    if NAMESPACES_WORK:
        with ContainerRuntime("namespace", state_dir=tmp_path) as runtime:
            assert runtime.isolation == "namespace"
    else:
        with pytest.raises(EmulatorError, match="namespace isolation is not available"):
            ContainerRuntime("namespace", state_dir=tmp_path)


UNPRIVILEGED_SCRIPT = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from pytest_northflank.emulator.runtime import ContainerRuntime
from pytest_northflank.errors import EmulatorError

async def whoami(container):
    process = await container.exec(["id", "-u"])
    output = b"".join([chunk async for _, chunk in process.output()])
    return await process.wait(), output.decode().strip()

report = {}
with ContainerRuntime("auto") as runtime:
    report["auto"] = [runtime.isolation, runtime.isolation_reason]
    container = runtime.start("unprivileged", ["sleep", "infinity"], {})
    report["exec"] = asyncio.run(whoami(container))
try:
    ContainerRuntime("namespace")
except EmulatorError as error:
    report["forced"] = str(error)
print(json.dumps(report))
"""


def unprivileged_python() -> str | None:
    """A Python >= 3.10 that an unprivileged user can run (the venv's may live under /root)."""
    for candidate in ("/usr/local/bin/python3", "/usr/bin/python3"):
        if os.access(candidate, os.X_OK) and os.stat(candidate).st_mode & 0o001:
            version = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info >= (3, 10))"],
                capture_output=True,
                text=True,
                check=False,
            )
            if version.stdout.strip() == "True":
                return candidate
    return None


def test_without_privileges_auto_falls_back_and_forced_namespace_says_why() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a child as an unprivileged user")
    python = unprivileged_python()
    if python is None:
        pytest.skip("no Python >= 3.10 that an unprivileged user may run")
    source_root = Path(__file__).resolve().parents[2]
    if not all(
        os.stat(path).st_mode & 0o005 == 0o005 for path in (source_root, *source_root.parents)
    ):
        pytest.skip(f"{source_root} is not readable by other users")
    child = subprocess.run(
        [python, "-I", "-c", UNPRIVILEGED_SCRIPT, str(source_root)],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        user=65534,
        group=65534,
        extra_groups=[],
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    mode, reason = report["auto"]
    assert mode == "directory"
    assert reason.startswith(
        "namespaces unavailable (unshare(pid) failed: Operation not permitted)"
    )
    assert report["exec"] == [0, "65534"]
    assert report["forced"] == (
        "namespace isolation is not available here: unshare(pid) failed: Operation not permitted"
    )


def test_unknown_isolation_is_refused() -> None:
    with pytest.raises(EmulatorError, match="isolation must be"):
        ContainerRuntime("vm")  # type: ignore[arg-type]


# -- start and exec ---------------------------------------------------------------------------


def test_exec_exit_codes(harness: Harness) -> None:
    container = harness.start()
    assert container.is_running()
    assert container.exit_code() is None
    assert run(run_exec(container, ["true"])).exit_code == 0
    assert sh(container, "exit 7").exit_code == 7
    assert sh(container, "kill -TERM $$").exit_code == 128 + signal.SIGTERM


def test_stdin_stdout_and_stderr_are_separate_streams(harness: Harness) -> None:
    container = harness.start()
    result = sh(container, "cat; echo to-stderr >&2", stdin=b"hello\nworld\n")
    assert result.exit_code == 0
    assert result.stdout == b"hello\nworld\n"
    assert result.stderr == b"to-stderr\n"


def test_binary_data_round_trips_in_bounded_chunks(harness: Harness) -> None:
    container = harness.start()
    data = bytes(range(256)) * 2048  # 512 KiB, every byte value
    result = run(run_exec(container, ["cat"], stdin=data))
    assert result.exit_code == 0
    assert result.stdout == data
    assert all(len(chunk) <= 32 * 1024 for _, chunk in result.chunks)


def test_exec_runs_in_the_workdir_with_a_session_of_its_own(harness: Harness) -> None:
    container = harness.start()
    result = sh(container, 'pwd; ps -o sid= -p $$; echo "$$"')
    cwd, session, pid = result.stdout.decode().split()
    assert cwd == container.workdir
    assert session == pid  # a session leader


def test_exec_does_not_inherit_ignored_signals(harness: Harness) -> None:
    # Python ignores SIGPIPE and SIGXFSZ; a sandbox process must not.
    container = harness.start(["sh", "-c", "grep SigIgn /proc/self/status; exec sleep infinity"])
    result = sh(container, "grep SigIgn /proc/self/status")
    assert result.stdout.split() == [b"SigIgn:", b"0000000000000000"]
    assert eventually(lambda: bool(container.log_lines()))
    assert container.log_lines()[0].text.split() == ["SigIgn:", "0000000000000000"]


def test_concurrent_execs(harness: Harness) -> None:
    container = harness.start()

    async def many() -> list[Result]:
        return await asyncio.gather(*(run_exec(container, ["echo", str(n)]) for n in range(8)))

    results = run(many())
    assert [r.stdout for r in results] == [f"{n}\n".encode() for n in range(8)]


# -- tty ------------------------------------------------------------------------------------


async def read_until(output: Any, needle: bytes, seen: bytearray) -> None:
    while needle not in seen:
        stream, data = await anext(output)
        assert stream == "stdout"
        seen += data


def test_tty_has_the_requested_size_and_follows_resize(harness: Harness) -> None:
    container = harness.start()

    async def scenario() -> tuple[bytes, int]:
        process = await container.exec(
            ["sh", "-c", "tty; test -t 0 && echo is-a-tty; stty size; read line; stty size"],
            tty=True,
            rows=33,
            columns=101,
        )
        output = process.output()
        seen = bytearray()
        await read_until(output, b"33 101", seen)
        process.resize(50, 132)
        await process.write(b"go\n")
        await read_until(output, b"50 132", seen)
        async for _, data in output:
            seen += data
        return bytes(seen), await process.wait()

    seen, code = run(scenario())
    assert code == 0
    assert b"/dev/pts/" in seen
    assert b"is-a-tty\r\n" in seen  # the terminal translates \n to \r\n
    assert seen.index(b"33 101") < seen.index(b"50 132")


def test_tty_resize_signals_the_foreground_process(harness: Harness) -> None:
    container = harness.start()
    script = 'trap "stty size" WINCH; echo ready; while :; do sleep 0.05; done'

    async def scenario() -> bytes:
        process = await container.exec(["sh", "-c", script], tty=True)
        output = process.output()
        seen = bytearray()
        await read_until(output, b"ready", seen)
        process.resize(41, 99)
        await read_until(output, b"41 99", seen)
        process.kill()
        assert await process.wait() == 128 + signal.SIGKILL
        async for _, data in output:
            seen += data
        return bytes(seen)

    assert b"41 99" in run(scenario())


def test_tty_close_stdin_sends_end_of_file(harness: Harness) -> None:
    container = harness.start()

    async def scenario() -> tuple[bytes, int]:
        process = await container.exec(["cat"], tty=True)
        await process.write(b"typed\n")
        await process.close_stdin()
        result = await collect(process)
        return result.stdout, result.exit_code

    out, code = run(scenario())
    assert code == 0
    assert out.count(b"typed\r\n") == 2  # the echo, then cat's copy


# -- environment ------------------------------------------------------------------------------


def test_env_reaches_main_process_and_exec(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NF_EMULATOR_OWN_SECRET", "must-not-leak")
    container = harness.start(
        ["sh", "-c", 'echo "main FOO=$FOO"; exec sleep infinity'], env={"FOO": "from-start"}
    )
    assert eventually(lambda: bool(container.log_lines()))
    assert container.log_lines()[0].text == "main FOO=from-start"

    result = sh(container, 'echo "$FOO|$BAR|$HOME|$PATH"', env={"BAR": "extra"})
    foo, bar, home, path = result.stdout.decode().strip().split("|")
    assert (foo, bar) == ("from-start", "extra")
    assert home == container.env["HOME"]
    assert "/usr/bin" in path.split(":")
    assert sh(container, 'echo "$FOO"', env={"FOO": "override"}).stdout == b"override\n"
    environment = sh(container, "env").stdout.decode()
    assert "NF_EMULATOR_OWN_SECRET" not in environment
    assert "must-not-leak" not in environment


def test_default_home(harness: Harness) -> None:
    container = harness.start()
    home = container.env["HOME"]
    if container.isolation == "namespace":
        assert home == "/root"
        assert container.workdir == "/"
    else:
        assert home == str(container.directory / "home")
        assert container.env["TMPDIR"] == str(container.directory / "tmp")
        assert container.workdir == str(container.directory / "work")
    assert sh(container, 'touch "$HOME/written" && ls "$HOME"').stdout == b"written\n"


# -- logs -------------------------------------------------------------------------------------


def test_logs_are_lines_with_utc_timestamps(harness: Harness) -> None:
    before = datetime.now(timezone.utc)
    container = harness.start(
        ["sh", "-c", "echo one; echo two >&2; printf 'three\\r\\n'; printf tail"]
    )
    assert eventually(lambda: not container.is_running())
    assert container.exit_code() == 0
    assert eventually(lambda: len(container.log_lines()) == 4)
    after = datetime.now(timezone.utc)
    lines = container.log_lines()
    texts = sorted((line.stream, line.text) for line in lines)
    assert texts == [("stderr", "two"), ("stdout", "one"), ("stdout", "tail"), ("stdout", "three")]
    assert [line.index for line in lines] == [0, 1, 2, 3]
    for line in lines:
        assert line.ts.tzinfo is not None
        assert line.ts.utcoffset() == timezone.utc.utcoffset(None)
        assert before <= line.ts <= after
    assert container.log_lines(2) == lines[2:]
    assert container.log_lines(10) == []


def test_log_keeps_the_newest_lines(isolation: str, tmp_path: Path) -> None:
    with ContainerRuntime(isolation, state_dir=tmp_path, max_log_lines=5) as runtime:  # type: ignore[arg-type]
        container = runtime.start(f"logs-{uuid.uuid4().hex[:8]}", ["seq", "1", "20"], {})
        assert eventually(lambda: not container.is_running())
        assert eventually(
            lambda: container.log_lines()[-1:] != [] and container.log_lines()[-1].text == "20"
        )
        lines = container.log_lines()
        assert [line.text for line in lines] == ["16", "17", "18", "19", "20"]
        assert [line.index for line in lines] == [15, 16, 17, 18, 19]
        assert [line.text for line in container.log_lines(0)] == [line.text for line in lines]
        assert [line.text for line in container.log_lines(18)] == ["19", "20"]


# -- isolation between sandboxes and from the host --------------------------------------------


@needs_namespaces
def test_namespace_sandboxes_have_private_files(tmp_path: Path) -> None:
    with ContainerRuntime("namespace", state_dir=tmp_path / "state") as runtime:
        first = runtime.start(f"a-{uuid.uuid4().hex[:8]}", ["sleep", "infinity"], {})
        second = runtime.start(f"b-{uuid.uuid4().hex[:8]}", ["sleep", "infinity"], {})
        etc_name = f"nf-runtime-test-{uuid.uuid4().hex}"
        assert sh(first, f"echo mine > /tmp/file && echo mine > /etc/{etc_name}").exit_code == 0
        assert sh(first, f"cat /tmp/file /etc/{etc_name}").stdout == b"mine\nmine\n"
        assert sh(second, f"ls /tmp; test -e /etc/{etc_name}").exit_code == 1
        assert sh(second, "ls -A /tmp").stdout == b""
        assert not Path("/etc", etc_name).exists()
        # The host's /tmp (where this test's files live) and the runtime's state are hidden.
        assert sh(first, f"test -e {tmp_path}").exit_code == 1
        assert sh(first, f"ls -A {runtime.state_dir}").stdout == b""


@needs_namespaces
def test_namespace_sandboxes_see_the_userland_but_not_the_hosts_business(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkout CI put under a kept directory (/var/lib/<ci>/workspace/repo), as cwd.
    checkout = Path(tempfile.mkdtemp(prefix="nf-checkout-", dir="/var/lib"))
    (checkout / "conftest.py").write_text("# the project under test\n")
    monkeypatch.chdir(checkout)
    try:
        with ContainerRuntime("namespace", state_dir=tmp_path / "state") as runtime:
            box = runtime.start(f"v-{uuid.uuid4().hex[:8]}", ["sleep", "infinity"], {})
            assert sh(box, f"ls -A {checkout}").stdout == b""
            top = sh(box, "ls -A /").stdout.decode().split()
            # Every host top-level directory outside an image's layout shows up empty.
            for entry in os.scandir("/"):
                if entry.is_dir(follow_symlinks=False) and entry.name not in IMAGE_ROOT | {
                    "proc", "dev", "sys"
                }:  # fmt: skip
                    assert sh(box, f"ls -A /{entry.name}").stdout == b"", entry.name
                elif not entry.is_dir() and not entry.is_symlink():
                    assert entry.name not in top
            assert sh(box, "test -x /usr/bin/env && test -s /etc/passwd").exit_code == 0
    finally:
        shutil.rmtree(checkout)


@needs_namespaces
def test_namespace_sandboxes_see_only_their_own_processes(tmp_path: Path) -> None:
    with ContainerRuntime("namespace", state_dir=tmp_path) as runtime:
        first = runtime.start(f"ps-a-{uuid.uuid4().hex[:8]}", ["sleep", "1111"], {})
        runtime.start(f"ps-b-{uuid.uuid4().hex[:8]}", ["sleep", "2222"], {})
        listing = sh(first, "ps -e -o pid=,args=").stdout.decode()
        processes = [line.split(None, 1) for line in listing.strip().splitlines()]
        assert processes[0] == ["1", "sleep 1111"]
        assert all("2222" not in args for _, args in processes)
        assert {args.split()[0] for _, args in processes} <= {"sleep", "sh", "ps"}
        hostname = sh(first, "hostname").stdout.decode().strip()
        assert hostname == first.hostname
        assert hostname.startswith("ps-a-")


def test_directory_sandboxes_have_separate_directories(tmp_path: Path) -> None:
    with ContainerRuntime("directory", state_dir=tmp_path) as runtime:
        first = runtime.start(f"d-a-{uuid.uuid4().hex[:8]}", ["sleep", "infinity"], {})
        second = runtime.start(f"d-b-{uuid.uuid4().hex[:8]}", ["sleep", "infinity"], {})
        assert sh(first, 'echo x > file && echo y > "$TMPDIR/t"').exit_code == 0
        assert sh(second, 'test -e file || test -e "$TMPDIR/t"').exit_code == 1
        assert (first.directory / "work" / "file").read_text() == "x\n"
        assert first.directory != second.directory


# -- stop, shutdown and the owner dying -------------------------------------------------------

BACKGROUND = "sleep 1001 >/dev/null 2>&1 & setsid sleep 1002 >/dev/null 2>&1 & echo started"


def test_stop_kills_everything_and_removes_the_sandbox(harness: Harness) -> None:
    container = harness.start()
    assert sh(container, BACKGROUND).stdout == b"started\n"

    async def long_running() -> ExecProcess:
        return await container.exec(["sleep", "1003"])

    running = run(long_running())
    assert eventually(lambda: len(marked_processes(harness.marker)) >= 4)
    assert container in harness.runtime.containers()
    container.stop()
    assert marked_processes(harness.marker) == []
    assert not container.is_running()
    # As PID 1 of a namespace, sleep ignores SIGTERM; elsewhere SIGTERM kills it.
    killed_by = signal.SIGKILL if container.isolation == "namespace" else signal.SIGTERM
    assert container.exit_code() == 128 + killed_by
    assert not container.directory.exists()
    assert mounts_mentioning(container.directory) == []
    assert container not in harness.runtime.containers()
    assert running.returncode is None  # its loop is gone; the process is not
    assert not psutil.pid_exists(running.pid) or (
        psutil.Process(running.pid).status() == psutil.STATUS_ZOMBIE
    )
    container.stop()  # idempotent


def test_stop_gives_a_sigterm_handler_its_grace(harness: Harness) -> None:
    script = 'trap "echo got-term; exit 0" TERM; echo ready; while :; do sleep 0.05; done'
    container = harness.start(["sh", "-c", script])
    assert eventually(lambda: [line.text for line in container.log_lines()] == ["ready"])
    container.stop(grace=30)
    assert container.exit_code() == 0
    assert [line.text for line in container.log_lines()] == ["ready", "got-term"]


def test_shutdown_stops_all_containers_and_refuses_new_ones(isolation: str, tmp_path: Path) -> None:
    runtime = ContainerRuntime(isolation, state_dir=tmp_path)  # type: ignore[arg-type]
    containers = [
        runtime.start(f"sd-{n}-{uuid.uuid4().hex[:8]}", ["sleep", "infinity"], {}) for n in range(3)
    ]
    runtime.shutdown()
    assert all(not container.is_running() for container in containers)
    assert runtime.containers() == []
    assert list(tmp_path.iterdir()) == []
    runtime.shutdown()
    with pytest.raises(EmulatorError, match="shut down"):
        runtime.start("after-shutdown", ["true"], {})


def test_default_state_dir_is_removed_by_shutdown(isolation: str) -> None:
    runtime = ContainerRuntime(isolation)  # type: ignore[arg-type]
    runtime.start(f"default-dir-{uuid.uuid4().hex[:8]}", ["sleep", "infinity"], {})
    assert runtime.state_dir.is_dir()
    runtime.shutdown()
    assert not runtime.state_dir.exists()


OWNER_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from pytest_northflank.emulator.runtime import ContainerRuntime

runtime = ContainerRuntime(sys.argv[1], state_dir=Path(sys.argv[2]))
container = runtime.start("owned", ["sleep", "infinity"], {sys.argv[3]: sys.argv[4]})

async def execs():
    done = await container.exec(["sh", "-c", sys.argv[5]])
    await done.wait()
    return await container.exec(["sleep", "1003"])

still_running = asyncio.run(execs())
print(json.dumps({"directory": str(container.directory)}), flush=True)
sys.stdin.read()  # until killed
"""


def test_sigkill_of_the_owner_leaves_no_process_and_no_mount(
    isolation: str, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, isolation, str(tmp_path), MARKER, marker, BACKGROUND],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert owner.stdout is not None
        directory = Path(json.loads(owner.stdout.readline())["directory"])
        assert eventually(lambda: len(marked_processes(marker)) >= 4)
        if isolation == "namespace":
            assert mounts_mentioning(directory) != []  # inside the sandbox only
        owner.send_signal(signal.SIGKILL)
        assert owner.wait(10) == -signal.SIGKILL
        assert eventually(lambda: not marked_processes(marker)), marked_processes(marker)
        assert mounts_mentioning(directory) == []
        assert str(directory) not in Path("/proc/self/mounts").read_text()
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.wait()
        for stream in (owner.stdin, owner.stdout):
            if stream is not None:
                stream.close()


# -- failures -------------------------------------------------------------------------------


def test_exec_into_a_stopped_container_raises(harness: Harness) -> None:
    container = harness.start()
    container.stop(grace=0)
    with pytest.raises(EmulatorError, match="is not running"):
        run(container.exec(["true"]))


def test_exec_after_the_main_process_ended_raises(harness: Harness) -> None:
    container = harness.start(["sh", "-c", "exit 3"])
    assert eventually(lambda: not container.is_running())
    assert container.exit_code() == 3
    with pytest.raises(EmulatorError, match="is not running"):
        run(container.exec(["true"]))


def test_exec_of_a_missing_program(harness: Harness) -> None:
    container = harness.start()
    with pytest.raises(CommandNotFound) as caught:
        run(container.exec(["no-such-program-xyz", "arg"]))
    error = caught.value
    assert error.exit_code == 127
    assert str(error) == "no-such-program-xyz: No such file or directory"
    assert isinstance(error, FileNotFoundError)
    assert isinstance(error, EmulatorError)
    with pytest.raises(CommandNotFound, match="/no/such/path: No such file"):
        run(container.exec(["/no/such/path"]))
    assert run(run_exec(container, ["true"])).exit_code == 0  # still usable


def test_exec_of_a_file_that_is_not_executable(harness: Harness) -> None:
    container = harness.start()
    path = os.path.join(container.workdir, "not-executable")
    assert sh(container, f"echo 'echo hi' > {path}").exit_code == 0
    with pytest.raises(CommandNotExecutable) as caught:
        run(container.exec([path]))
    assert caught.value.exit_code == 126
    assert str(caught.value) == f"{path}: Permission denied"


def test_start_of_a_missing_program_leaves_nothing(harness: Harness) -> None:
    with pytest.raises(CommandNotFound, match="no-such-main: No such file or directory"):
        harness.start(["no-such-main"])
    assert harness.runtime.containers() == []
    assert list(harness.runtime.state_dir.iterdir()) == []


def test_kill_ends_the_exec_and_its_children(harness: Harness) -> None:
    container = harness.start()

    async def scenario() -> int:
        process = await container.exec(["sh", "-c", "sleep 1004 & sleep 1005; echo never"])
        assert eventually(lambda: len(marked_processes(harness.marker)) >= 4, timeout=5)
        process.kill()
        result = await collect(process)
        assert result.stdout == b""
        return result.exit_code

    assert run(scenario()) == 128 + signal.SIGKILL
    assert eventually(lambda: len(marked_processes(harness.marker)) == 1)  # the main process


def test_cancelled_exec_leaves_nothing_behind(harness: Harness) -> None:
    container = harness.start()

    async def scenario() -> int:
        cancelled = 0
        for delay in (0, 0, 0.001, 0.003, 0.008, 0.015, 0.03):
            task = asyncio.ensure_future(container.exec(["sleep", "1006"]))
            await asyncio.sleep(delay)
            task.cancel()
            try:
                process = await task
            except asyncio.CancelledError:
                cancelled += 1
                continue
            process.kill()  # it got started before the cancellation landed
            assert await process.wait() == 128 + signal.SIGKILL
            process.close()
        return cancelled

    assert run(scenario()) >= 2  # at least the ones cancelled before their first step
    assert eventually(
        lambda: [p for p in marked_processes(harness.marker) if "1006" in p.cmdline()] == []
    )
    assert container.is_running()


def test_bad_input_is_refused_with_a_clear_message(harness: Harness) -> None:
    runtime = harness.runtime
    with pytest.raises(EmulatorError, match="argv must be a non-empty list"):
        runtime.start("bad-argv", [], {})
    with pytest.raises(EmulatorError, match="argv must be a non-empty list"):
        runtime.start("bad-argv", "sleep 1", {})  # type: ignore[arg-type]
    with pytest.raises(EmulatorError, match=r"env\['SECRET'\] contains a NUL"):
        runtime.start("bad-env", ["true"], {"SECRET": "val\0ue"})
    with pytest.raises(EmulatorError, match="invalid variable name 'A=B'"):
        runtime.start("bad-env", ["true"], {"A=B": "x"})
    with pytest.raises(EmulatorError, match="sandbox_id must be"):
        runtime.start("", ["true"], {})
    container = harness.start()
    with pytest.raises(EmulatorError, match="already exists"):
        runtime.start(container.sandbox_id, ["sleep", "infinity"], {})
    with pytest.raises(EmulatorError, match=r"exec argv\[1\] must be a string"):
        run(container.exec(["echo", 1]))  # type: ignore[list-item]
    with pytest.raises(EmulatorError, match="tty rows must be"):
        run(container.exec(["true"], tty=True, rows=0))


def test_the_host_view_keeps_an_images_layout_and_masks_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "host"
    for name in ("usr/bin", "etc", "var/lib", "opt", "run/resolve", "builds/repo", "home/me"):
        (root / name).mkdir(parents=True)
    (root / "run/resolve/stub.conf").write_text("nameserver 127.0.0.53\n")
    (root / "etc/resolv.conf").symlink_to("../run/resolve/stub.conf")
    (root / "etc/localtime").symlink_to("../usr/zone")
    (root / "usr/zone").write_text("UTC")
    (root / "bin").symlink_to("usr/bin")
    (root / "container_info.json").write_text("{}")
    (root / "tmp").mkdir(mode=0o1777)
    (root / "tmp").chmod(0o1777)
    view = host_view(root=str(root))
    masked = dict(view.masked_dirs)
    assert {"/builds", "/home", "/run", "/tmp"} <= masked.keys()
    assert not {"/usr", "/etc", "/var", "/opt", "/bin"} & masked.keys()
    assert masked["/tmp"] == "1777"
    assert view.hidden_files == ("/container_info.json",)
    # resolv.conf points into the masked /run, so the sandbox gets a copy; localtime does not.
    assert view.copied_links == ("/etc/resolv.conf",)


@pytest.mark.parametrize(
    ("path", "maskable"),
    [("/var/lib/ci/repo", True), ("/usr/src/app", True), ("/var/tmp", True), ("/opt/ci", True),
     ("/", False), ("/opt", False), ("/usr", False), ("/usr/lib", False), ("/etc/ssl", False)],
)  # fmt: skip
def test_only_non_essential_private_directories_are_masked(path: str, maskable: bool) -> None:
    view = host_view(path)
    assert (path in dict(view.masked_dirs)) is maskable


@needs_namespaces
def test_a_slow_probe_is_asked_again_patiently_not_taken_for_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pytest_northflank.emulator.runtime import container_runtime
    from pytest_northflank.emulator.runtime.errors import LauncherSilent

    real_launch, timeouts = container_runtime._launch, []

    def first_one_silent(*args: Any, timeout: float, **kwargs: Any) -> Any:
        timeouts.append(timeout)
        if len(timeouts) == 1:
            raise LauncherSilent("the sandbox launcher did not report within 10 s")
        return real_launch(*args, timeout=timeout, **kwargs)

    monkeypatch.setattr(container_runtime, "_launch", first_one_silent)
    works, why = container_runtime._probe()
    assert works, why
    assert timeouts == [container_runtime.START_TIMEOUT, container_runtime.PATIENT_PROBE_TIMEOUT]
    # Silent twice: then it says so, instead of hanging on.
    timeouts.clear()
    monkeypatch.setattr(
        container_runtime, "_launch", lambda *a, **k: (_ for _ in ()).throw(LauncherSilent("quiet"))
    )
    assert container_runtime._probe() == (False, "could not run the probe: quiet")
