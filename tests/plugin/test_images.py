"""What a pytest run says about emulator images: pulled, missing, loaded, or the host's
userland standing in (header, the test's report section, the summary)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from image_builder import Image, Layer, busybox_layer, docker_save, have_busybox, make_image
from image_registry import TestRegistry

from pytest_northflank.emulator.images import ImageCache, load_images
from pytest_northflank.emulator.runtime import probe_namespaces

pytestmark = [
    pytest.mark.skipif(not have_busybox(), reason="no static /bin/busybox"),
    pytest.mark.skipif(not probe_namespaces()[0], reason="images need namespace isolation"),
]


@pytest.fixture
def registry() -> Iterator[TestRegistry]:
    server = TestRegistry()
    server.push("tiny/userland", "1", userland())
    yield server
    server.close()


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "pytest-northflank" / "images"


def userland() -> Image:
    return make_image(busybox_layer(), Layer().file("srv/marker", b"from-image\n"),
                      Env=["PATH=/bin"], WorkingDir="/srv")  # fmt: skip


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # The suite turns images off (NF_EMULATOR_IMAGES=off); these runs ask for them.
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rA", "--nf-emulator-images=pull", *args
    )  # fmt: skip


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_a_pulled_image_is_what_the_test_runs_in(
    pytester: pytest.Pytester, registry: TestRegistry
) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.nf_sandbox(image="{registry.address}/tiny/userland:1")
        def test_it(nf_sandbox):
            assert nf_sandbox.run("cat marker; pwd", check=True).stdout == "from-image\\n/srv\\n"
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert "not available offline" not in result.stdout.str()


def test_a_missing_tag_errors_with_the_registry_answer(
    pytester: pytest.Pytester, registry: TestRegistry
) -> None:
    image = f"{registry.address}/tiny/userland:nope"
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.nf_sandbox(image="{image}")
        def test_it(nf_sandbox):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        f"*DeploymentFailed*did not become ready: its deployment FAILED*The image could not be "
        f"pulled: image '{image}': the registry answered: MANIFEST_UNKNOWN manifest unknown*"
        "(check the image name and tag)*"
    ])  # fmt: skip


def test_no_registry_means_the_host_userland_said_loudly(pytester: pytest.Pytester) -> None:
    image = f"127.0.0.1:{closed_port()}/team/app:1"
    pytester.makepyfile(
        """
        def test_one(nf_sandbox):
            assert nf_sandbox.run("test -x /usr/bin/python3").exit_code == 0  # the host's

        def test_two(nf_sandbox):
            pass
        """
    )
    result = run(pytester, f"--nf-image={image}")
    result.assert_outcomes(passed=2)
    notice = f"image {image} not available offline: using this machine's userland"
    result.stdout.fnmatch_lines([
        f"northflank: image {image} is not in the image cache: pulled on first use; if no "
        "registry answers, sandboxes use this machine's userland, with a notice per test",
        "*- northflank image -*",
        f"{notice} (cannot reach http://127.0.0.1:*: *Connection refused)",
        "*- northflank -*",
        f"{notice} (cannot reach *); 2 tests",
    ])  # fmt: skip
    assert result.stdout.str().count("- northflank image -") == 2

    strict = run(pytester, f"--nf-image={image}", "--nf-emulator-images=require")
    strict.assert_outcomes(errors=2)
    strict.stdout.fnmatch_lines(["*The image could not be pulled: image '*': cannot reach*"])


def test_a_loaded_image_replaces_the_host_for_the_default(
    pytester: pytest.Pytester, tmp_path: Path, private_cache: Path
) -> None:
    load_images(docker_save(userland(), "ubuntu:22.04", tmp_path / "u.tar"),
                ImageCache(private_cache))  # fmt: skip
    pytester.makepyfile(
        """
        def test_it(nf_sandbox):
            assert nf_sandbox.run("cat /srv/marker", check=True).stdout == "from-image\\n"
            assert nf_sandbox.run("test -e /usr/bin/python3").exit_code == 1
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["northflank: image ubuntu:22.04 from the image cache (sha256:*)"])
    assert "not available offline" not in result.stdout.str()


def test_directory_isolation_says_it_uses_the_host(
    pytester: pytest.Pytester, registry: TestRegistry
) -> None:
    image = f"{registry.address}/tiny/userland:1"
    pytester.makepyfile("def test_it(nf_sandbox):\n    pass\n")
    result = run(pytester, f"--nf-image={image}", "--nf-emulator-isolation=directory")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        f"image {image} not available offline: using this machine's userland (directory "
        "isolation cannot run images); 1 test"
    ])  # fmt: skip
