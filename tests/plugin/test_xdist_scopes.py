"""Module- and class-scoped sandboxes under ``pytest -n``: a mode that splits a module makes
one per worker, and the summary says so once, with the mode that shares them."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("clean_environment")

# xdist's load scheduler hands each worker at least two tests of its first batch, so with
# 12 tests both workers run tests of this module.
SUITE = """
import pytest

@pytest.fixture(scope="module")
def shared(nf_sandbox_factory):
    return nf_sandbox_factory()

@pytest.mark.parametrize("n", range(12))
def test_uses_module_sandbox(shared, n):
    assert shared.run("true").ok
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", "--nf-warm-ahead=0", *args
    )


def test_dist_load_prints_how_many_copies_and_how_to_share(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_scoped=SUITE)
    result = run(pytester, "-n", "2", "--dist", "load")
    result.assert_outcomes(passed=12)
    text = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "module/class-scoped sandboxes: 1 made 2 times (1 copy): --dist load gives a "
            "module's tests to several workers, each making its own; --dist loadscope (or "
            "loadfile) keeps them on one worker, sharing one sandbox"
        ]
    )
    assert text.count("module/class-scoped sandboxes:") == 1


def test_dist_loadscope_shares_them_and_says_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_scoped=SUITE)
    result = run(pytester, "-n", "2", "--dist", "loadscope")
    result.assert_outcomes(passed=12)
    assert "module/class-scoped sandboxes" not in result.stdout.str()
    assert "sandboxes: 1 created, 1 deleted" in result.stdout.str()
