"""The emulator's directory fallback (no namespaces) runs commands on the host's file system:
an absolute path outside the sandbox is mapped into the sandbox's private root instead of
being written on the host."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("clean_environment")


def test_the_directory_fallback_keeps_host_paths_off_the_host(pytester: pytest.Pytester) -> None:
    host_file = Path("/etc") / f"nf-fallback-{secrets.token_hex(4)}"
    host_dir = Path("/srv") / f"nf-fallback-{secrets.token_hex(4)}"
    local = pytester.path / "payload.txt"
    local.write_text("payload\n")
    pytester.makepyfile(
        test_fallback=f"""
        def test_host_paths_stay_in_the_sandbox(nf_sandbox, tmp_path):
            nf_sandbox.write_text({str(host_file)!r}, "stays in the sandbox")
            assert nf_sandbox.read_text({str(host_file)!r}) == "stays in the sandbox"
            nf_sandbox.upload({str(local)!r}, {str(host_dir)!r} + "/app/")
            assert nf_sandbox.read_text({str(host_dir)!r} + "/app/payload.txt") == "payload\\n"
            nf_sandbox.download({str(host_dir)!r}, tmp_path / "back")
            assert (tmp_path / "back" / "app" / "payload.txt").read_text() == "payload\\n"
            assert nf_sandbox.run(["touch", {str(host_file)!r} + "-touched"]).ok
            assert nf_sandbox.exists({str(host_file)!r} + "-touched")

        def test_program_paths_and_the_sandboxs_own_paths_are_as_they_are(nf_sandbox):
            home = nf_sandbox.run('printf %s "$HOME"').stdout
            nf_sandbox.write_text(home + "/abs.txt", "absolute but inside")
            assert nf_sandbox.read_text(home + "/abs.txt") == "absolute but inside"
            assert nf_sandbox.run(["env", "A=1", "/bin/sh", "-c", "echo $A"]).stdout == "1\\n"
            assert nf_sandbox.run(["ls", "/usr/bin/env"]).stdout == "/usr/bin/env\\n"
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--nf-emulator-isolation=directory"
    )
    result.assert_outcomes(passed=2)
    assert not host_file.exists()
    assert not Path(f"{host_file}-touched").exists()
    assert not host_dir.exists()
