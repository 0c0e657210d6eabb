"""Readiness probes on the marker and the factory, background processes at teardown and in
the failure report: real pytest runs in a subprocess, on the embedded emulator."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("clean_environment")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args)


@pytest.mark.parametrize("isolation", ["auto", "directory"])
def test_each_probe_kind_holds_the_fixture_until_the_service_answers(
    pytester: pytest.Pytester, isolation: str
) -> None:
    pytester.makepyfile(
        test_probes="""
        import socket
        import pytest
        from pytest_northflank import probe

        def free_port():
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return s.getsockname()[1]

        HTTP_PORT, TCP_PORT = free_port(), free_port()
        SERVER = (
            "sleep 1; mkdir -p /tmp/www && cd /tmp/www && echo ok > health && "
            "exec python3 -m http.server --bind 127.0.0.1 {}"
        )

        @pytest.mark.nf_sandbox(
            command="sh -c '" + SERVER.format(HTTP_PORT) + "'",
            ready=probe.http(HTTP_PORT, "/health"),
        )
        def test_http_marker(nf_sandbox):
            assert nf_sandbox.run(["cat", "/tmp/www/health"]).stdout == "ok\\n"
            assert nf_sandbox.run(["sh", "-c", "test -d /tmp/www"]).ok

        def test_tcp_factory(nf_sandbox_factory):
            box = nf_sandbox_factory(
                command="sh -c '" + SERVER.format(TCP_PORT) + "'", ready=probe.tcp(TCP_PORT)
            )
            box.wait_for_http(TCP_PORT, "/health", timeout=0.5)  # already answers

        @pytest.mark.nf_sandbox(
            command="sh -c 'sleep 1; touch /tmp/ready; exec sleep infinity'",
            ready=probe.command("test -e /tmp/ready"),
        )
        def test_command_marker(nf_sandbox):
            assert nf_sandbox.exists("/tmp/ready")
        """
    )
    result = run(pytester, "-v", f"--nf-emulator-isolation={isolation}")
    result.assert_outcomes(passed=3)


def test_a_probe_that_never_passes_fails_with_the_log_tail(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_never="""
        import pytest
        from pytest_northflank import probe

        @pytest.mark.nf_sandbox(
            command="sh -c 'echo booting-up; exec sleep infinity'",
            ready=probe.command("false"),
            ready_timeout=2,
        )
        def test_never(nf_sandbox):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=1)
    text = result.stdout.str()
    assert "did not become ready" in text
    assert "booting-up" in text


@pytest.mark.parametrize("isolation", ["auto", "directory"])
def test_teardown_stops_processes_and_the_report_shows_them(
    pytester: pytest.Pytester, isolation: str
) -> None:
    pytester.makepyfile(
        test_report="""
        def test_fails(nf_sandbox):
            worker = nf_sandbox.start("trap '' TERM; echo worker-started; sleep 1000")
            worker.wait_for_line("worker-started")
            done = nf_sandbox.start("echo finished-line; exit 4")
            done.wait()
            assert False, "on purpose"
        """
    )
    result = run(pytester, f"--nf-emulator-isolation={isolation}")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "background process [running] trap '' TERM; echo worker-started; sleep 1000" in text
    assert "worker-started" in text
    assert "background process [exited 4] echo finished-line; exit 4" in text
    assert "finished-line" in text
    assert "left behind" not in text
