"""The runtime's isolation: how it is chosen, what a sandbox sees of the host and of other
sandboxes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from runtime_testing import (
    NAMESPACES_WORK,
    WHY_NOT,
    needs_namespaces,
    sh,
)

from pytest_northflank.emulator.runtime import (
    ContainerRuntime,
)
from pytest_northflank.emulator.runtime.host_view import IMAGE_ROOT, host_view
from pytest_northflank.errors import EmulatorError

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
    source_root = Path(__file__).resolve().parents[3]
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
