"""Markers that layer like pytest's own (closest wins per keyword, env and tags merge), the
factory on top of them, and a factory typo reported like a marker typo at the caller's line.
Real pytest runs on the embedded emulator."""

from __future__ import annotations

import pytest

from pytest_northflank.config.settings import Settings
from pytest_northflank.provisioning.warm_ahead import Demand, plan

pytestmark = pytest.mark.usefixtures("clean_environment")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args)


LAYERED = """
import pytest

pytestmark = pytest.mark.nf_sandbox(env={"A": "module", "B": "module"}, tags=["mod"],
                                    plan="nf-compute-50")

@pytest.mark.nf_sandbox(env={"B": "class", "C": "class"}, tags="cls")
class TestLayers:
    @pytest.mark.nf_sandbox(env={"C": "test"}, image="alpine:3.20")
    def test_three_layers(self, nf_sandbox, nf_client, nf_settings):
        out = nf_sandbox.run('echo "$A $B $C"').stdout
        assert out == "module class test\\n"
        service = nf_client.get_service(nf_settings.project_in_use, nf_sandbox.id)
        assert (service.image, service.plan) == ("alpine:3.20", "nf-compute-50")
        assert service.tags == ["mod", "cls"]

    def test_factory_layers_on_the_markers(self, nf_sandbox_factory, nf_client, nf_settings):
        box = nf_sandbox_factory(env={"C": "factory", "D": "factory"}, tags=["fac"])
        assert box.run('echo "$A $B $C $D"').stdout == "module class factory factory\\n"
        service = nf_client.get_service(nf_settings.project_in_use, box.id)
        assert service.tags == ["mod", "cls", "fac"]
        assert service.plan == "nf-compute-50"

def test_module_only(nf_sandbox):
    assert nf_sandbox.run('echo "$A $B ${C-unset}"').stdout == "module module unset\\n"
"""


def test_markers_layer_module_class_and_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_layers=LAYERED)
    result = run(pytester, "--nf-tag=base", "-v")
    result.assert_outcomes(passed=3)


def test_warm_ahead_plans_with_the_same_layering() -> None:
    markers = (
        ((), {"env": {"C": "test"}, "image": "alpine:3.20"}),
        ((), {"env": {"B": "class", "C": "class"}, "tags": "cls"}),
        ((), {"env": {"A": "module", "B": "module"}, "tags": ["mod"], "plan": "p1"}),
    )
    settings = Settings.model_validate({"tags": ["base"]})
    [options, plain] = plan([Demand("t.py::T::test", markers), Demand("t.py::u")], settings)
    assert options.env == {"A": "module", "B": "class", "C": "test"}
    assert (options.image, options.plan, options.tags) == ("alpine:3.20", "p1", ("mod", "cls"))
    assert plain == settings.sandbox_options()


def test_ports_merge_per_port_number_the_closest_winning() -> None:
    markers = (
        ((), {"ports": [{"port": 8000, "public": True, "name": "web"}]}),
        ((), {"ports": [8000, {"port": 5432, "protocol": "TCP", "name": "db"}]}),
    )
    [options] = plan([Demand("t.py::test", markers)], Settings.model_validate({}))
    by_port = {port.port: port for port in options.ports}
    assert sorted(by_port) == [5432, 8000]
    assert (by_port[8000].name, by_port[8000].public) == ("web", True)  # the test's marker
    assert (by_port[5432].name, by_port[5432].protocol) == ("db", "TCP")


def test_markers_help_says_how_they_layer(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--markers")
    text = " ".join(result.stdout.str().split())
    assert "closest marker wins per keyword; env, tags and ports merge" in text


def test_a_factory_typo_is_reported_at_the_callers_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_typo="""
        def test_typo(nf_sandbox_factory):
            box = nf_sandbox_factory(imgae="alpine:3.20")
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert (
        "nf_sandbox_factory(...) in test_typo.py::test_typo: unknown keyword 'imgae' "
        "(did you mean 'image'?)" in text
    )
    # The traceback ends at the test's own call, not inside the plugin.
    result.stdout.fnmatch_lines(
        ['>*box = nf_sandbox_factory(imgae="alpine:3.20")', "E *ConfigError*"]
    )
    assert "settings.py" not in text
    assert "fixtures.py" not in text


def test_a_marker_typo_gets_the_same_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_typo="""
        import pytest

        @pytest.mark.nf_sandbox(imgae="alpine:3.20")
        def test_typo(nf_sandbox):
            pass
        """
    )
    result = run(pytester)
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.nf_sandbox on test_typo.py::test_typo: unknown keyword 'imgae' "
            "(did you mean 'image'?)*"
        ]
    )
