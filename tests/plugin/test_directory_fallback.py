"""The emulator's directory fallback (no namespaces) runs commands on the host's file system:
an absolute path outside the sandbox is refused instead of being written on the host."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("clean_environment")


def test_the_directory_fallback_refuses_a_host_path(pytester: pytest.Pytester) -> None:
    host_file = Path("/etc") / f"nf-fallback-{secrets.token_hex(4)}"
    local = pytester.path / "payload.txt"
    local.write_text("payload\n")
    pytester.makepyfile(
        test_fallback=f"""
        import pytest
        from pytest_northflank import FileTransferError

        def test_host_paths_are_refused(nf_sandbox):
            with pytest.raises(FileTransferError, match="outside the sandbox"):
                nf_sandbox.write_text({str(host_file)!r}, "would land on the host")
            with pytest.raises(FileTransferError, match="outside the sandbox"):
                nf_sandbox.upload({str(local)!r}, {str(host_file)!r})
            result = nf_sandbox.run(["touch", {str(host_file)!r}])
            assert result.exit_code == 126
            assert "outside the sandbox" in result.stderr

        def test_paths_inside_work(nf_sandbox):
            nf_sandbox.write_text("inside/file.txt", "ok")
            assert nf_sandbox.read_text("inside/file.txt") == "ok"
            home = nf_sandbox.run('printf %s "$HOME"').stdout
            nf_sandbox.write_text(home + "/abs.txt", "absolute but inside")
            assert nf_sandbox.read_text(home + "/abs.txt") == "absolute but inside"
            assert nf_sandbox.run(["env", "A=1", "/bin/sh", "-c", "echo $A"]).stdout == "1\\n"
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--nf-emulator-isolation=directory"
    )
    result.assert_outcomes(passed=2)
    assert not host_file.exists()
