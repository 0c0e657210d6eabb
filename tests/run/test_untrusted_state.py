"""Trust nothing on disk: private run directories per user, a ledger with forged, damaged or
missing lines, a removed run directory, a full disk, SIGKILL. Cleanup deletes only what a fresh
read shows is the run's, leaks nothing, and a second local user runs side by side. Real
processes throughout: pytest runs, the reaper, a second uid, a tmpfs in a mount namespace."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from remote_emulator import RemoteEmulator, wait_for, write_suite

from pytest_northflank.client import NorthflankClient
from pytest_northflank.client.models import DeploymentServiceSpec
from pytest_northflank.run.files import JsonFile, RunDirError, private_dir, runs_root
from pytest_northflank.run.identity import Run
from pytest_northflank.run.ownership import Ownership

PROJECT = "default-project"
NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3.11"
VENV_SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp dir of our own as the system's, and no runtime dir: runs go to
    ``<temp>/pytest-northflank-<uid>``."""
    temp = tmp_path / "tmp"
    temp.mkdir(mode=0o1777)
    temp.chmod(0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    return temp


# --------------------------------------------------------------------- private run state


def test_run_directories_and_files_are_private_to_the_user(temp_root: Path) -> None:
    run = Run(given_run_id="privat")
    run.files.create()
    run.ledger.record_intent(name="nft-privat-m-1", project_id=PROJECT, worker_id="m", owner="m:1")
    JsonFile(run.files.rate_limit).replace({"remaining": 1})
    root = temp_root / f"pytest-northflank-{os.getuid()}"
    assert run.run_dir == root / "run-privat"
    assert mode_of(root) == 0o700
    assert mode_of(run.run_dir) == 0o700
    for name in ("ledger.jsonl", "ledger.jsonl.lock", "rate-limit.json", "run.pid"):
        assert mode_of(run.run_dir / name) == 0o600, name


def test_the_users_own_runtime_dir_is_preferred(
    temp_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert runs_root() == runtime / "pytest-northflank"
    # A runtime dir that is not this user's own (after su, say) is not used.
    runtime.chmod(0o777)
    assert runs_root() == temp_root / f"pytest-northflank-{os.getuid()}"


@pytest.mark.parametrize("planted", ["world-writable", "someone-elses", "symlink", "file"])
def test_a_planted_runs_directory_is_refused_with_a_clear_message(
    temp_root: Path, tmp_path: Path, planted: str
) -> None:
    root = temp_root / f"pytest-northflank-{os.getuid()}"
    if planted == "world-writable":
        root.mkdir()
        root.chmod(0o777)
        expected = "is writable by others (mode 777)"
    elif planted == "someone-elses":
        root.mkdir(mode=0o700)
        os.chown(root, NOBODY, NOBODY)
        expected = f"belongs to uid {NOBODY}, not {os.getuid()}"
    elif planted == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        root.symlink_to(tmp_path / "elsewhere")
        expected = "is not a directory"
    else:
        root.write_text("")
        expected = "is not a directory"
    run = Run(given_run_id="planted")
    with pytest.raises(RunDirError, match="refusing to use") as refused:
        run.files.create()
    assert expected in str(refused.value)
    assert "set XDG_RUNTIME_DIR (or TMPDIR) to a directory of your own" in str(refused.value)
    with pytest.raises(RunDirError):
        run.ledger.record_intent(name="nft-planted-m-1", project_id="p", worker_id="m", owner="x")


def test_a_planted_runs_directory_stops_the_run_naming_it(
    pytester: pytest.Pytester, remote_emulator: RemoteEmulator, tmp_path: Path
) -> None:
    temp = tmp_path / "shared-tmp"
    temp.mkdir()
    root = temp / f"pytest-northflank-{os.getuid()}"
    root.mkdir()
    root.chmod(0o777)
    suite = write_suite(tmp_path / "suite", "def test_box(nf_sandbox):\n    pass\n")
    env = {**remote_emulator.env(), "TMPDIR": str(temp)}
    env.pop("XDG_RUNTIME_DIR", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(suite)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert f"refusing to use {root}: it is writable by others" in done.stderr
    assert remote_emulator.service_names() == set()


SECOND_USER_SUITE = """
import os, stat, tempfile
from pathlib import Path
import pytest

@pytest.mark.parametrize("n", range(3))
def test_box(nf_sandbox, n):
    assert nf_sandbox.run("echo hello").stdout == "hello\\n"
    root = Path(tempfile.gettempdir()) / f"pytest-northflank-{os.getuid()}"
    info = os.lstat(root)
    assert info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700
    (run_dir,) = root.glob("run-*")
    assert stat.S_IMODE(os.lstat(run_dir / "ledger.jsonl").st_mode) == 0o600
"""


def test_a_second_local_user_runs_side_by_side(
    remote_emulator: RemoteEmulator, tmp_path: Path
) -> None:
    if not Path(SYSTEM_PYTHON).exists() or os.getuid() != 0:
        pytest.skip("needs root and a system Python to run as a second user")
    # A temp dir shared by both users, as /tmp is; a suite both may read.
    shared = Path(tempfile.mkdtemp(prefix="nf-two-users-", dir="/tmp"))
    shared.chmod(0o1777)
    suite = write_suite(shared / "suite", SECOND_USER_SUITE)
    for path in (shared / "suite", suite / "test_suite.py"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    home = shared / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    try:
        env = {**remote_emulator.env(), "TMPDIR": str(shared)}
        env.pop("XDG_RUNTIME_DIR", None)
        argv = ["-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", "no:randomly", str(suite)]
        mine = subprocess.Popen(
            [sys.executable, *argv],
            env=env,
            cwd=suite,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        theirs_env = {
            **env,
            "HOME": str(home),
            "PYTHONPATH": os.pathsep.join([os.getcwd(), str(VENV_SITE / "site-packages")]),
        }
        theirs = subprocess.Popen(
            [
                "setpriv",
                f"--reuid={NOBODY}",
                f"--regid={NOBODY}",
                "--clear-groups",
                SYSTEM_PYTHON,
                *argv,
                "-o",
                f"cache_dir={home}",
            ],
            env=theirs_env,
            cwd=home,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        my_output, _ = mine.communicate(timeout=300)
        their_output, _ = theirs.communicate(timeout=300)
        assert mine.returncode == 0, my_output
        assert theirs.returncode == 0, their_output
        assert "3 passed" in my_output
        assert "3 passed" in their_output
        assert "PermissionError" not in my_output + their_output
        assert remote_emulator.service_names() == set()
        # Each user's runs directory is theirs; a clean finish left no run behind.
        for uid in (os.getuid(), NOBODY):
            root = shared / f"pytest-northflank-{uid}"
            assert os.lstat(root).st_uid == uid
            assert mode_of(root) == 0o700
            assert list(root.iterdir()) == []
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# ---------------------------------------------------------- the ledger says where to look


def owned_spec(name: str, run_id: str) -> DeploymentServiceSpec:
    description = Ownership(run_id, "master").description(datetime.now(timezone.utc))
    return DeploymentServiceSpec(name=name, command="sleep infinity", description=description)


OWNER_SCRIPT = """
import os, sys, time
from datetime import datetime, timezone
from pathlib import Path
from pytest_northflank.client import NorthflankClient
from pytest_northflank.client.models import DeploymentServiceSpec
from pytest_northflank.run.files import RunDir
from pytest_northflank.run.ledger import Ledger
from pytest_northflank.run.ownership import Ownership
from pytest_northflank.run.reaper import ReaperProcess

url, run_dir, run = sys.argv[1:4]
token = os.environ.pop("OWNER_TOKEN")
RunDir(Path(run_dir)).create()
ledger = Ledger(Path(run_dir) / "ledger.jsonl")
ReaperProcess.start(ledger_path=ledger.path, base_url=url, token=token, run_id=run,
                    project_id="default-project", run_dir=Path(run_dir))
owner = Ownership(run, "master")
with NorthflankClient(token, base_url=url) as client:
    for n in range(1, 5):
        name = owner.service_name(n, "mine")
        ledger.record_intent(name=name, project_id="default-project", worker_id="master",
                             owner=f"m:{os.getpid()}")
        service = client.create_deployment_service("default-project", DeploymentServiceSpec(
            name=name, command="sleep infinity",
            description=owner.description(datetime.now(timezone.utc))))
        ledger.record_created(name, service.id)
print("created", flush=True)
time.sleep(600)
"""


def start_owner(remote: RemoteEmulator, run_dir: Path, run_id: str) -> subprocess.Popen[str]:
    """A process that starts a reaper, creates four services of run ``run_id`` (ledger first),
    says so, and waits to be killed."""
    env = {**os.environ, "OWNER_TOKEN": remote.token}
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, remote.url, str(run_dir), run_id],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert owner.stdout is not None
    assert owner.stdout.readline().strip() == "created"
    return owner


def kill(owner: subprocess.Popen[str]) -> None:
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    if owner.stdout is not None:
        owner.stdout.close()


def foreign_services(remote: RemoteEmulator, run_id: str) -> dict[str, str]:
    """Services the run did not create, some named or described to look like it: name -> id."""
    with NorthflankClient(remote.token, base_url=remote.url) as client:
        made = {
            # A human's service.
            "production-db": DeploymentServiceSpec(name="production-db"),
            # Named like the run, but nobody's ownership description.
            f"nft-{run_id}-m-7": DeploymentServiceSpec(name=f"nft-{run_id}-m-7"),
            # Another run's, fully marked.
            "nft-zzzzzz-m-1": owned_spec("nft-zzzzzz-m-1", "zzzzzz"),
            # Described as the run's, but not named by it.
            "lookalike": owned_spec("lookalike", run_id),
        }
        return {
            name: client.create_deployment_service(PROJECT, spec).id for name, spec in made.items()
        }


def forged_and_damaged_lines(run_id: str, ids: dict[str, str]) -> bytes:
    def intent(name: str) -> str:
        return (
            f'{{"op":"intent","name":"{name}","project":"{PROJECT}","worker":"m",'
            f'"owner":"m:1","at":1}}'
        )

    def created(name: str, service_id: str) -> str:
        return f'{{"op":"created","name":"{name}","id":"{service_id}","at":1}}'

    forged = [
        intent("production-db"),
        created("production-db", ids["production-db"]),
        # A name of the run pointing at the human's service id.
        intent(f"nft-{run_id}-m-9"),
        created(f"nft-{run_id}-m-9", ids["production-db"]),
        # A name of the run whose service carries no ownership: found by name, not deleted.
        intent(f"nft-{run_id}-m-7"),
        intent("nft-zzzzzz-m-1"),
        created("nft-zzzzzz-m-1", ids["nft-zzzzzz-m-1"]),
        intent("lookalike"),
        created("lookalike", ids["lookalike"]),
    ]
    damaged = [
        "null",
        "[1, 2, 3]",
        '{"name": 5, "op": "intent"}',
        '{"op":"intent","name":"nft-x-m-1","project":null,"worker":"m","owner":"m:1"}',
        '{"op":"created","name":"nft-x-m-1","id":1e400}',
        f'{{"op":"intent","name":"nft-{run_id}-m-8","project":"{PROJECT}","worker":"m",'
        '"owner":"m:1","at":1e999}',
        '{"op":"crea',
    ]
    text = "\n".join(forged + damaged[:-1]) + "\n"
    return text.encode() + b"\xff\xfe\x00 not text\n" + damaged[-1].encode()


def test_the_reaper_deletes_only_what_a_fresh_read_shows_is_the_runs(
    remote_emulator: RemoteEmulator, tmp_path: Path
) -> None:
    run_id = "forged"
    run_dir = tmp_path / "run-forged"
    owner = start_owner(remote_emulator, run_dir, run_id)
    ids = foreign_services(remote_emulator, run_id)
    with (run_dir / "ledger.jsonl").open("ab") as ledger:
        ledger.write(b"\n" + forged_and_damaged_lines(run_id, ids))
    log = run_dir / "reaper.log"
    kill(owner)

    assert wait_for(lambda: remote_emulator.run_services(run_id) == {f"nft-{run_id}-m-7"}, 90)
    assert remote_emulator.service_names() == set(ids)  # zero foreign deletions
    assert wait_for(lambda: log.exists() and "deleted 4 service(s)" in log.read_text())
    text = log.read_text()
    assert "not deleting production-db: 'production-db' is not a name this run gives" in text
    assert f"not deleting nft-{run_id}-m-9: the ledger's id {ids['production-db']}" in text
    assert f"not deleting nft-{run_id}-m-7" in text
    assert "does not carry run forged's ownership description" in text
    assert "line(s) skipped as damaged or not well-formed" in text
    assert remote_emulator.token not in text
    # Skipped entries stay in the ledger (for a human); the run's files stay with it.
    assert run_dir.exists()


@pytest.mark.parametrize("damage", ["ledger removed", "run directory removed", "ledger garbage"])
def test_without_a_usable_ledger_the_reaper_lists_the_project(
    remote_emulator: RemoteEmulator, tmp_path: Path, damage: str
) -> None:
    run_id = "nolist"
    run_dir = tmp_path / "run-nolist"
    owner = start_owner(remote_emulator, run_dir, run_id)
    ids = foreign_services(remote_emulator, run_id)
    if damage == "ledger removed":
        (run_dir / "ledger.jsonl").unlink()
    elif damage == "run directory removed":
        shutil.rmtree(run_dir)
    else:
        (run_dir / "ledger.jsonl").write_bytes(secrets.token_bytes(4096))
    kill(owner)

    assert wait_for(lambda: remote_emulator.run_services(run_id) == {f"nft-{run_id}-m-7"}, 90)
    assert remote_emulator.service_names() == set(ids)


# ------------------------------------------------------------ whole runs that go wrong


FULL_DISK_SUITE = """
import errno, os, signal, tempfile
from pathlib import Path

def test_fills_the_disk_then_dies(nf_sandbox_factory):
    for n in range(6):
        nf_sandbox_factory()
    filler = os.open(Path(tempfile.gettempdir()) / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(filler, b"x" * 4096)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    print("disk full", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_full_disk_and_sigkill_leak_nothing(
    remote_emulator: RemoteEmulator, tmp_path: Path
) -> None:
    if shutil.which("unshare") is None or os.getuid() != 0:
        pytest.skip("needs root and unshare for a tmpfs of its own")
    temp = tmp_path / "tiny"
    temp.mkdir()
    suite = write_suite(tmp_path / "suite", FULL_DISK_SUITE)
    env = {**remote_emulator.env(), "TMPDIR": str(temp)}
    env.pop("XDG_RUNTIME_DIR", None)
    # A 512 KiB tmpfs as the temp dir, in a mount namespace of the run's own (gone with it).
    mount = 'mount -t tmpfs -o size=512k,mode=1777 nf-tiny "$0" && exec "$@"'
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            mount,
            str(temp),
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-s",
            "--nf-warm-ahead=0",
            str(suite),
        ],
        env=env,
        cwd=suite,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    assert "disk full" in done.stdout
    assert len(remote_emulator.service_names()) == 6
    # The reaper (in the run's mount namespace, on the full disk) deletes all six.
    assert wait_for(lambda: remote_emulator.service_names() == set(), timeout=120)


REMOVED_DIR_SUITE = """
import os, tempfile
from pathlib import Path

def run_dir():
    root = Path(tempfile.gettempdir()) / f"pytest-northflank-{os.getuid()}"
    (found,) = root.glob("run-*")
    return found

def test_first(nf_sandbox):
    assert nf_sandbox.run("true").ok

def test_replaces_the_run_directory_with_a_file(nf_sandbox):
    path = run_dir()
    path.rename(path.with_name("moved-away"))
    path.write_text("not a directory")

def test_after(nf_sandbox):
    pass
"""


def test_a_run_directory_replaced_mid_run_leaks_nothing_and_still_reports(
    remote_emulator: RemoteEmulator, tmp_path: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    suite = write_suite(tmp_path / "suite", REMOVED_DIR_SUITE)
    env = {**remote_emulator.env(), "TMPDIR": str(temp)}
    env.pop("XDG_RUNTIME_DIR", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "--junitxml",
            str(tmp_path / "junit.xml"),
            str(suite),
        ],
        env=env,
        cwd=suite,
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = done.stdout + done.stderr
    if "3 passed" not in text:  # the third test's sandbox was not made ahead in time
        assert "2 passed, 1 error" in text, text
        # Its create is never sent: the ledger cannot be written first.
        assert "it is not a directory" in text
    assert "INTERNALERROR" not in text
    assert "the run directory" in text
    assert "was removed or replaced during the run; the reaper looks for this run's" in text
    assert "sandboxes: " in text  # the summary, printed all the same
    assert wait_for(lambda: remote_emulator.service_names() == set(), timeout=90)


# ------------------------------------------------------------------ pytest-northflank reap


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def leave_run_dir(root: Path, run_id: str, pid: int, *, alive_service: bool = False) -> Path:
    run_dir = private_dir(root / f"run-{run_id}")
    (run_dir / "run.pid").write_text(f"{pid}\n")
    ledger = run_dir / "ledger.jsonl"
    if alive_service:
        ledger.write_text(
            f'{{"op":"intent","name":"nft-{run_id}-m-1","project":"{PROJECT}","worker":"m",'
            f'"owner":"m:{pid}","at":1}}\n'
        )
    long_ago = 1_600_000_000
    for path in [*run_dir.iterdir(), run_dir]:
        os.utime(path, (long_ago, long_ago))
    return run_dir


def reap(remote: RemoteEmulator, temp: Path, *args: str) -> str:
    env = {**remote.env(), "TMPDIR": str(temp)}
    env.pop("XDG_RUNTIME_DIR", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest_northflank.cli", "reap", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_reap_stale_removes_only_directories_of_dead_runs(
    remote_emulator: RemoteEmulator, tmp_path: Path
) -> None:
    temp = tmp_path / "tmp"
    root = private_dir(temp / f"pytest-northflank-{os.getuid()}")
    dead = leave_run_dir(root, "deadrun", dead_pid())
    running = leave_run_dir(root, "liverun", os.getpid())
    leaking = leave_run_dir(root, "leakrun", dead_pid(), alive_service=True)
    dry = reap(remote_emulator, temp, "--stale")
    assert f"dry run: would remove {dead}" in dry
    assert dead.exists()
    out = reap(remote_emulator, temp, "--stale", "--yes")
    assert f"removed {dead}" in out
    assert not dead.exists()
    assert running.exists()
    assert leaking.exists()
    assert "its ledger lists 1 service(s); run: pytest-northflank reap --run leakrun --yes" in out


def test_reap_run_deletes_the_runs_services_and_its_directory(
    remote_emulator: RemoteEmulator, tmp_path: Path
) -> None:
    temp = tmp_path / "tmp"
    root = private_dir(temp / f"pytest-northflank-{os.getuid()}")
    left = leave_run_dir(root, "leftrun", dead_pid(), alive_service=True)
    with NorthflankClient(remote_emulator.token, base_url=remote_emulator.url) as client:
        client.create_deployment_service(PROJECT, owned_spec("nft-leftrun-m-1", "leftrun"))
        client.create_deployment_service(PROJECT, DeploymentServiceSpec(name="nft-leftrun-m-2"))
    out = reap(remote_emulator, temp, "--run", "leftrun", "--yes")
    assert "deleted" in out
    assert f"removed {left}" in out
    assert not left.exists()
    # The one named like the run but not described as it is not this tool's.
    assert remote_emulator.service_names() == {"nft-leftrun-m-2"}
