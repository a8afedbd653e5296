"""The benchmark scripts' own logic (arguments, generated suites, the table), without Postgres."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def schema_size() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("schema_size")
    finally:
        sys.path.remove(str(BENCH))


def test_help_runs_without_a_server() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "schema_size.py"), "--help"], capture_output=True, text=True, check=True
    )
    assert "--quick" in out.stdout and "--schemas" in out.stdout


def test_quick_mode_is_small_and_only_the_300_table_schema(schema_size: ModuleType) -> None:
    args = schema_size.parse_args(["--quick"])
    assert args.runs == 1 and args.tests < 50
    assert [s.tables for s in args.schema_list] == [300]
    default = schema_size.parse_args([])
    assert sorted(s.tables for s in default.schema_list) == [1, 100, 300]


@pytest.mark.parametrize("text", ["0:0", "1:100", "5:-1"])
def test_impossible_schemas_are_refused(schema_size: ModuleType, text: str) -> None:
    with pytest.raises(ValueError):
        schema_size.parse_schemas(text)


@pytest.mark.parametrize(("tables", "rows"), [(1, 0), (100, 10_000), (300, 200_000), (7, 13)])
def test_migration_seeds_exactly_the_rows_and_leaves_written_tables_empty(
    schema_size: ModuleType, tables: int, rows: int
) -> None:
    schema = schema_size.Schema(tables, rows)
    sql = schema_size.migration_sql(schema)
    assert len(re.findall(r"^CREATE TABLE ", sql, re.M)) == tables
    seeded = dict(re.findall(r"INSERT INTO (t\d+) .* generate_series\(1, (\d+)\)", sql))
    assert sum(int(n) for n in seeded.values()) == rows
    for kind in schema.kinds():
        written = set(schema.written(kind))
        if kind == "seeded":
            assert written <= seeded.keys()
        else:
            assert not written & seeded.keys() and len(written) == (5 if kind == "w5" else 1)


@pytest.mark.parametrize("kind", ["w1", "w5", "seeded"])
def test_anchor_suite_passes_on_the_fake_connection(schema_size: ModuleType, kind: str) -> None:
    """The no-database anchor runs the same test code; its fake connection must answer every table's SELECT."""
    schema = schema_size.Schema(300, 1000)
    namespace: dict[str, object] = {}
    conftest = schema_size.TIMING_CONFTEST + schema_size.FAKE_CONFTEST_TAIL
    exec(compile(conftest, "conftest", "exec"), namespace)
    exec(compile(schema_size.test_module("nodb", schema.written(kind), 3), "suite", "exec"), namespace)
    fake = namespace["FakeConnection"]
    for i in range(3):
        namespace[f"test_{i}"](fake())  # type: ignore[operator]


def test_table_rows_subtract_anchor_and_floor(schema_size: ModuleType) -> None:
    schema = schema_size.Schema(100, 10_000)
    n = 50
    medians = {"nodb_w1": (2.0, 0.5, 0.001), "nodb_w1_service_user": (3.0, 0.5, 0.002)}
    medians["nodb_w5"] = medians["nodb_w5_service_user"] = (2.5, 0.5, 0.0015)
    for kind in schema.kinds():
        base = f"{schema.key}_{kind}"
        medians[f"{base}_shared"] = (2.2, 0.5, 0.003)
        medians[f"{base}_database"] = (2.5, 0.5, 0.006)
        medians[f"{base}_transaction"] = (2.3, 0.5, 0.004)
        medians[f"{base}_pytest_postgresql"] = (8.0, 0.5, 0.1)
    floors = {schema.key: {"clone_ms": 20.0, "connect_ms": 3.0, "warmup_w1_ms": 4.0, "reset_w1_ms": 1.5}}
    floors[schema.key]["reset_w5_ms"] = 2.5
    summary = schema_size.summarize([schema], n, 1, medians, floors)
    assert summary["s100_10000_w1_database_totals_ms"] == pytest.approx((2.5 - 2.0) / n * 1000)
    assert summary["s100_10000_w1_pytest_postgresql_in_test_ms"] == pytest.approx((0.1 - 0.002) * 1000)
    assert summary["s100_10000_w1_statements_ms"] == pytest.approx(2.0)
    assert summary["s100_10000_w1_totals_floor_ms"] == pytest.approx(2.0 + 1.5)
    assert summary["s100_10000_seeded_totals_floor_ms"] == pytest.approx(2.0 + 20 + 3 + 4)
    rows = schema_size.table_rows([schema], summary)
    assert len(rows) == 2 * len(schema.kinds())
    assert all(len(row) == len(schema_size.TABLE_HEADER) for row in rows)
    in_test_w1 = next(r for r in rows if "1 empty table: in-test" in r[0])
    assert in_test_w1[1] == "5.00" and in_test_w1[5] == "+3.00"  # 6 - 1 ms; minus the 2 ms statements
    table = schema_size.markdown(schema_size.TABLE_HEADER, rows)
    assert table.count("\n") == len(rows) + 1


def test_before_adds_the_other_checkouts_database_column(schema_size: ModuleType, tmp_path: Path) -> None:
    schema = schema_size.Schema(100, 10_000)
    env = {"PYTHONPATH": "/elsewhere/src"}
    cases = schema_size.build_cases(tmp_path, [schema], 3, [], {"TESTLANE_IT": "1"}, env)
    before = [case for case in cases if case.key.endswith("_database_before")]
    assert len(before) == len(schema.kinds()) and all(case.env == env for case in before)
    medians = {"nodb_w1": (2.0, 0.5, 0.001), "nodb_w1_service_user": (3.0, 0.5, 0.002)}
    medians["nodb_w5"] = medians["nodb_w5_service_user"] = (2.5, 0.5, 0.0015)
    for kind in schema.kinds():
        for variant, seconds in (("shared", 0.003), ("database", 0.006), ("database_before", 0.009)):
            medians[f"{schema.key}_{kind}_{variant}"] = (2.5, 0.5, seconds)
        medians[f"{schema.key}_{kind}_transaction"] = medians[f"{schema.key}_{kind}_pytest_postgresql"] = (3, 0.5, 0.1)
    floors = {schema.key: {"clone_ms": 20.0, "connect_ms": 3.0, "warmup_w1_ms": 4.0, "reset_w1_ms": 1.5}}
    floors[schema.key]["reset_w5_ms"] = 2.5
    summary = schema_size.summarize([schema], 3, 1, medians, floors, before=True)
    assert summary["s100_10000_w1_database_before_in_test_ms"] == pytest.approx(8.0)
    row = next(r for r in schema_size.table_rows([schema], summary) if "1 empty table: in-test" in r[0])
    assert row[1:3] == ["8.00", "5.00"] and len(row) == len(schema_size.TABLE_HEADER) + 1


def test_seeded_reset_documents_its_modes() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "seeded_reset.py"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--before", "--fan-in", "--empty", "--costs", "--bookkeeping"):
        assert flag in out


@pytest.fixture(scope="module")
def ab() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("ab")
    finally:
        sys.path.remove(str(BENCH))


def test_the_a_b_summary_is_medians_and_b_over_a(ab: ModuleType) -> None:
    results = {"x_ms_a": [1.0, 3.0, 2.0], "x_ms_b": [1.0, 1.0, 4.0], "waited_a": [0, 0, 0], "waited_b": [2, 3, 1]}
    summary = ab.ab_medians(results, ["x_ms", "waited"])
    assert summary == {
        "x_ms_a": 2.0,
        "x_ms_b": 1.0,
        "x_ms_ratio": 0.5,
        "waited_a": 0,
        "waited_b": 2,
        "waited_ratio": None,
    }
    lines = ab.ab_table(summary, ["x_ms", "waited"])
    assert lines[0].split() == ["figure", "A", "B", "B/A"]
    assert [line.split() for line in lines[1:]] == [["x_ms", "2.0", "1.0", "0.5"], ["waited", "0", "2", "None"]]
    assert len({len(line) for line in lines}) == 1  # columns line up


@pytest.mark.parametrize("script", ["ab.py", "first_test.py", "background_clones.py"])
def test_every_a_b_script_prints_through_the_one_helper(script: str) -> None:
    """The table was written three times (bench/ab.py, first_test.py, background_clones.py); now in ab.py only."""
    text = (BENCH / script).read_text()
    assert "print_ab(summary, figures, heading, as_json=args.json)" in text
    assert text.count("'B/A'") == (1 if script == "ab.py" else 0)
    assert ("statistics.median(results[" in text) == (script == "ab.py")
    out = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, check=True)
    assert "--json" in out.stdout


def test_per_test_cost_documents_its_variants() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "per_test_cost.py"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for word in ("--before", "database_reset_between", "--runs"):
        assert word in out
