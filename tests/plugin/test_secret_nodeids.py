"""Node ids that hold a credential: a project parametrized by a database URL (encode/databases does, with the
URL testlane maps into its environment) gets node ids such as ``test_q[postgresql://u:PASSWORD@h:1/db]``."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_inner

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("plain_env")]

SECRET = "s3cretPW42"
URLS = [f"postgresql://u:{SECRET}@h:1/db", f"mysql://root:{SECRET}@h:2/db"]

# One test whose two parameter sets fail at one assertion (a group of two: its `tests:` line), one whose only
# failing parameter set is a group of its own (its headline), a class's method, and a libpq conninfo.
SUITE = f"""
import pytest

URLS = {URLS!r}

@pytest.mark.parametrize("url", URLS)
def test_queries(url):
    assert url == "nothing"

@pytest.mark.parametrize("url", URLS[:1])
def test_alone(url):
    raise RuntimeError("boom")

class TestConn:
    @pytest.mark.parametrize("dsn", ["host=h port=1 password={SECRET}", "plain"])
    def test_dsn(self, dsn):
        raise KeyError(dsn[:4]) if "=" in dsn else ValueError(dsn)
"""


def test_no_password_of_a_node_id_reaches_the_digest_json_or_jsonl(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_db=SUITE)
    result = run_inner(pytester, "--digest", "--report-json", "r.json", "--report-jsonl", "r.jsonl")
    text = result.stdout.str()
    assert result.ret == 1, text
    assert SECRET not in text, text
    assert "test_queries[postgresql://u:***@h:1/db]" in text  # the test still named, its password masked
    for name in ("r.json", "r.jsonl"):
        assert SECRET not in (pytester.path / name).read_text()
    json.loads((pytester.path / "r.json").read_text())


def test_the_rerun_of_a_test_parametrized_by_a_url_or_a_secret_names_its_function(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_db=SUITE)
    text = run_inner(pytester, "--digest", "--digest-budget", "20000").stdout.str()
    reruns = [line.strip() for line in text.splitlines() if "rerun:" in line]
    assert reruns, text
    assert all("://" not in line and "***" not in line and SECRET not in line for line in reruns), reruns
    assert any(line.endswith("test_db.py::test_alone   (all its parameters)") for line in reruns), reruns
    assert any(line.endswith("test_db.py::TestConn::test_dsn   (all its parameters)") for line in reruns), reruns
    # two parameter sets of one function, both failing: its function, as before (the note would add nothing)
    assert any(line.endswith("test_db.py::test_queries") for line in reruns), reruns
    # a parameter set that holds nothing of the run's keeps its own id
    assert any(line.endswith("'test_db.py::TestConn::test_dsn[plain]'") for line in reruns), reruns
    # the headline names the test, masked, since the rerun line does not name its parameter set
    assert "FAILED test_db.py::TestConn::test_dsn[host=h port=1 password=***] — KeyError" in text, text


def test_a_jsonl_report_in_another_directory_leaves_xdist_workers_at_the_projects_rootdir(
    pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The controller opens the stream before its workers parse the command line again; pytest took the
    # existing file for a path to test and gave the workers the common ancestor as their rootdir.
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "r.jsonl"
    pytester.makepyprojecttoml("[tool.testlane]\nservices = []\n")
    pytester.makepyfile(
        test_where="""
        import os

        import pytest

        def check(config):
            assert config.inipath == config.rootpath / "pyproject.toml"
            assert "--rootdir" not in os.environ.get("PYTEST_ADDOPTS", "")  # testlane's pin is the worker's only

        @pytest.mark.parametrize("n", [1, 2])
        def test_fails(request, n):
            check(request.config)
            assert n == 0
        """
    )
    text = run_inner(pytester, "--digest", "-n", "2", "--report-jsonl", str(elsewhere)).stdout.str()
    assert "[1] FAILED 2 tests — AssertionError: assert 1 == 0" in text or "assert 2 == 0" in text, text
    assert "    at test_where.py:12\n" in text, text
    assert "tests: test_where.py::test_fails[" in text, text
    events = [json.loads(line) for line in elsewhere.read_text().splitlines()]
    assert {e["nodeid"] for e in events if e["event"] == "test"} == {
        "test_where.py::test_fails[1]",
        "test_where.py::test_fails[2]",
    }
