"""@seam(repeat=N) in pytest, on generated projects: the failing iteration is reported, fresh mode
makes one test per iteration with fresh fixtures, the seam marker selects seam tests."""

from __future__ import annotations

import pytest

from tests.helpers import plain_project, run_inner

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("plain_env")]


def test_a_failing_iteration_is_reported_with_its_number(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(
        test_races="""
        from testlane.seams import seam

        @seam(repeat=20)
        def test_rarely_wrong(seam_iteration):
            assert seam_iteration.number != 13, "two callers won"

        @seam(repeat=5)
        def test_always_right(seam_iteration):
            assert seam_iteration.of == 5
        """
    )
    result = run_inner(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*AssertionError: two callers won*", "*seam: iteration 13 of 20 failed (iterations 1-12 passed)*"]
    )


def test_async_seam_tests_repeat_under_pytest_asyncio(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(
        test_async_races="""
        import pytest
        from testlane.seams import seam

        RUNS = []

        @pytest.mark.asyncio
        @seam(repeat=4)
        async def test_async(seam_iteration):
            RUNS.append(seam_iteration.number)

        def test_ran_four_times():
            assert RUNS == [1, 2, 3, 4]
        """
    )
    run_inner(pytester).assert_outcomes(passed=2)


def test_fresh_mode_makes_one_test_per_iteration_with_fresh_fixtures(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(
        test_fresh="""
        import pytest
        from testlane.seams import seam

        SEEN = []

        @pytest.fixture
        def state():
            return []   # a new list per test: a stand-in for a fresh database

        @seam(repeat=3, fresh=True)
        def test_fresh(state, seam_iteration):
            assert state == []
            state.append(seam_iteration.number)
            SEEN.append((seam_iteration.number, seam_iteration.of))
            assert seam_iteration.number != 2

        @seam(repeat=2, fresh=True)
        def test_without_asking_for_the_iteration():
            pass

        def test_after():
            assert SEEN == [(1, 3), (2, 3), (3, 3)]
        """
    )
    result = run_inner(pytester, "-v")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_fresh[[]iteration-1-of-3[]] PASSED*",
            "*test_fresh[[]iteration-2-of-3[]] FAILED*",
            "*test_fresh[[]iteration-3-of-3[]] PASSED*",
            "*test_without_asking_for_the_iteration[[]iteration-2-of-2[]] PASSED*",
        ]
    )


def test_seam_tests_are_selected_by_marker_and_the_iteration_defaults_to_one(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(
        test_mixed="""
        from testlane.seams import seam

        @seam()
        def test_seam(seam_iteration):
            assert (seam_iteration.number, seam_iteration.of) == (1, 1)

        def test_plain():
            pass
        """
    )
    run_inner(pytester, "-m", "seam").assert_outcomes(passed=1, deselected=1)
