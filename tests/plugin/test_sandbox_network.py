"""Talking to services end to end (pytest runs in a subprocess, on the embedded emulator):
ports on the marker, the factory and --nf-port; url(), forward(), hostname and address();
the directory fallback refusing clearly; bad ports named with their source."""

from __future__ import annotations

import os

import pytest

from pytest_northflank.emulator.runtime import probe_namespaces

pytestmark = pytest.mark.usefixtures("clean_environment")

ISOLATION = os.environ.get("NF_TEST_EMULATOR_ISOLATION", "auto")
HAS_NETWORK = probe_namespaces()[0] and ISOLATION != "directory"
needs_network = pytest.mark.skipif(
    not HAS_NETWORK, reason="the emulator has no network here (directory isolation)"
)

CONFTEST = """
WEB = ("sh -c 'mkdir -p /srv && cd /srv && echo $PAGE > index.html && "
       "exec python3 -m http.server 8000'")
ECHO = ('python3 -c "import socket\\n'
        's = socket.create_server((\\'127.0.0.1\\', 7000))\\n'
        'while True:\\n'
        '    c = s.accept()[0]\\n'
        '    c.sendall(c.recv(100)[::-1]); c.close()"')
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--nf-emulator-isolation={ISOLATION}", *args
    )


@needs_network
def test_services_talk_to_each_other_and_to_the_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_services="""
        import socket, time, urllib.request
        import pytest
        from conftest import ECHO, WEB

        def fetch(url):
            for _ in range(200):
                try:
                    return urllib.request.urlopen(url, timeout=5).read().decode()
                except OSError:
                    time.sleep(0.05)
            raise AssertionError(url)

        def test_two_servers_on_8000_and_one_calls_the_other(nf_sandbox_factory):
            a = nf_sandbox_factory(command=WEB, env={"PAGE": "alpha"}, ports=[8000])
            b = nf_sandbox_factory(command=WEB, env={"PAGE": "beta"},
                                   ports=[{"port": 8000, "public": True, "name": "web"}])
            assert fetch(a.url(8000, "/index.html")) == "alpha\\n"   # through a forward
            assert fetch(b.url(8000, "/index.html")) == "beta\\n"    # its public listener
            assert b.url(8000).startswith("http://127.0.0.1:")
            assert a.hostname == a.id and a.address(8000) == f"{a.id}:8000"
            code = "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read())"
            out = b.run(["python3", "-c", code, f"http://{a.address(8000)}/index.html"], check=True)
            assert "alpha" in out.stdout
            # Its loopback-only server is its own business.
            c = nf_sandbox_factory(command="python3 -m http.server 9000 --bind 127.0.0.1",
                                   ports=[9000])
            probe = "import socket,sys; socket.create_connection((sys.argv[1], 9000), timeout=2)"
            assert b.run(["python3", "-c", probe, c.hostname]).exit_code != 0

        @pytest.mark.nf_sandbox(command=ECHO, ports=[{"port": 7000, "protocol": "TCP"}])
        def test_raw_tcp_through_forward(nf_sandbox):
            host, port = nf_sandbox.forward(7000)
            for _ in range(200):
                with socket.create_connection((host, port)) as sock:
                    sock.sendall(b"stressed")
                    answer = sock.recv(100)
                if answer:
                    break
                time.sleep(0.05)
            assert answer == b"desserts"
            with pytest.raises(Exception, match="port 7001 is not a port of sandbox"):
                nf_sandbox.forward(7001)
        """
    )
    result = run(pytester, "-q")
    result.assert_outcomes(passed=2)


@needs_network
def test_ports_from_the_command_line(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_cli_ports="""
        def test_it(nf_sandbox):
            assert [(p.port, p.protocol, p.name) for p in nf_sandbox.options.ports] == [
                (8000, "HTTP", "p8000"), (5432, "TCP", "p5432")]
            assert nf_sandbox.address(5432) == f"{nf_sandbox.hostname}:5432"
        """
    )
    run(pytester, "-q", "--nf-port", "8000", "--nf-port", "5432/tcp").assert_outcomes(passed=1)


@pytest.mark.skipif(HAS_NETWORK, reason="checks the directory fallback")
def test_the_directory_fallback_refuses_ports_clearly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_refuse="""
        import pytest
        from pytest_northflank import NetworkError

        @pytest.mark.nf_sandbox(ports=[8000])
        def test_it(nf_sandbox):
            for reach in (lambda: nf_sandbox.hostname, lambda: nf_sandbox.url(8000),
                          lambda: nf_sandbox.forward(8000), lambda: nf_sandbox.address(8000)):
                with pytest.raises(NetworkError, match="directory isolation.*namespace"):
                    reach()
        """
    )
    run(pytester, "-q", "--nf-emulator-isolation=directory").assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (
            "@pytest.mark.nf_sandbox(ports=[8000, 8000])",
            "@pytest.mark.nf_sandbox on test_bad.py::test_it: ports=[8000, 8000] is wrong: "
            "port #2: port 8000 is listed twice",
        ),
        (
            "@pytest.mark.nf_sandbox(ports=[{'port': 53, 'protocol': 'UDP', 'public': True}])",
            "port #1: a public port must be HTTP or HTTP/2, not UDP",
        ),
        (
            "@pytest.mark.nf_sandbox(ports=[{'port': 70000}])",
            "'port' must be a whole number 1-65535, got 70000",
        ),
        (
            "@pytest.mark.nf_sandbox(ports=[{'port': 80, 'name': 'much-too-long'}])",
            "'name' must be 1-8 characters",
        ),
        (
            "@pytest.mark.nf_sandbox(ports=[{'port': 80, 'protocol': 'SCTP'}])",
            "'protocol' must be one of HTTP, HTTP/2, TCP, UDP, got 'SCTP'",
        ),
    ],
)
def test_bad_ports_are_named_with_their_source(
    pytester: pytest.Pytester, where: str, expected: str
) -> None:
    pytester.makepyfile(test_bad=f"import pytest\n\n{where}\ndef test_it(nf_sandbox):\n    pass\n")
    result = run(pytester, "-q")
    assert expected in result.stdout.str() + result.stderr.str()
    assert result.ret != 0


def test_a_bad_nf_port_option_names_the_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_it():\n    pass\n")
    result = run(pytester, "-q", "--nf-port", "web")
    assert "--nf-port" in result.stderr.str()
    assert "expected PORT or PORT/PROTOCOL, got 'web'" in result.stderr.str()
    assert result.ret != 0
