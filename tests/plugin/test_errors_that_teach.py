"""Errors seen from the user's side: the default command timeout, calls on a deleted sandbox,
and transfer errors that end at the test's line. Real pytest runs on the embedded emulator."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("clean_environment")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def test_a_hanging_command_is_stopped_by_the_default_timeout(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nnf_command_timeout = 1\n")
    pytester.makepyfile(
        test_hang="""
        import pytest
        from pytest_northflank import CommandTimeout

        def test_hangs(nf_sandbox):
            nf_sandbox.run("echo started; sleep 600")

        def test_a_background_wait_too(nf_sandbox):
            nf_sandbox.start("sleep 600").wait()

        def test_an_explicit_timeout_wins(nf_sandbox):
            assert nf_sandbox.run("sleep 2; echo done", timeout=30).stdout == "done\\n"
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(
        ["E *WaitTimeout: *sleep 600* did not end within 1s (the default --nf-command-timeout)*"]
    )
    result.stdout.fnmatch_lines(
        [
            "E *CommandTimeout: command 'echo started; sleep 600' timed out after 1s and was "
            "stopped in sandbox nft-*",
            "E *started",
            "E *(the default --nf-command-timeout; pass timeout=... to run() for a longer one)",
        ]
    )


def test_zero_turns_the_default_timeout_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_none="""
        def test_no_limit(nf_sandbox):
            assert nf_sandbox.default_timeout is None
            assert nf_sandbox.run("sleep 1.5; echo done").stdout == "done\\n"
        """
    )
    run(pytester, "--nf-command-timeout=0").assert_outcomes(passed=1)


def test_a_call_on_a_deleted_sandbox_says_when_and_by_what(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_deleted="""
        def test_after_delete(nf_sandbox):
            nf_sandbox.delete()
            nf_sandbox.run("true")

        def test_deleted_from_outside(nf_sandbox, nf_client, nf_settings):
            nf_client.delete_service(nf_settings.project_in_use, nf_sandbox.id)
            nf_sandbox.run("true")
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "E *SandboxDeleted: sandbox nft-*-after-delete was deleted at ??:??:?? UTC "
            "(by sandbox.delete() in test_deleted.py::test_after_delete); it can no longer "
            "run commands or move files",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "E *SandboxDeleted: sandbox nft-* (service *) no longer exists: it was deleted "
            "before ??:??:?? UTC (by something outside this test: *"
        ]
    )


def test_transfer_errors_end_at_the_tests_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_copy="""
        def test_download_missing(nf_sandbox, tmp_path):
            nf_sandbox.download("/no/such/file", tmp_path / "x")
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    result.stdout.fnmatch_lines(
        ['>*nf_sandbox.download("/no/such/file", tmp_path / "x")', "E *FileTransferError: *"]
    )
    traceback = text[text.index("test_download_missing") : text.index("northflank sandbox")]
    assert "pytest_northflank" not in traceback.replace("pytest_northflank.errors", "")
