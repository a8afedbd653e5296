#!/bin/sh
# Every row of issue 19's table, measured in one sitting (docs/benchmarks.md, "Issue 19: every target").
#
# Usage: sh bench/issue19.sh [OUTDIR]      (about 50 min on 2 quiet cores; run nothing else beside it)
#
# Each script prints its own table; this one runs them back to back from this checkout, logs the load
# average before each (the figures are only comparable to each other when it stays low) and keeps each
# script's output in OUTDIR (default /dev/shm/issue19-<time>). The scripts and what each row reads:
#   schema_size.py     1 table, 100 and 300 tables (empty-table and seeded writes), testlane's two modes
#                      beside pytest-postgresql and the floors (statements, reset, clone)
#   per_test_cost.py   1 table: where a test's milliseconds go (shared, database, transaction, diagnostics)
#   seeded_reset.py    the pool alone at 300 tables / 200k rows, 1 and 5 empty tables written
#   plugin_cost.py     the plugin alone: per test and per run
#   first_test.py      time to first test, Postgres + Valkey, warm and cold (`pytest --it`; `testlane run` too)
#   migration_edit.py  60 Alembic migrations, the last one edited (cheap, and 20 ms each), `pytest --it` and
#                      `testlane run`
#   run_phases.py      the same, split by pytest hook: where the edit's cost lands under each runner
# Scripts that compare two checkouts are given this one on both sides (A = B): the figure is B's, the
# A/B spread is the run's noise.
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY="$HERE/.venv/bin/python"
OUT=${1:-/dev/shm/issue19-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

step() {
    name=$1
    shift
    printf '== %s  %s  load:%s\n' "$(date -u +%H:%M:%S)" "$name" "$(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/log"
    "$PY" "$@" >"$OUT/$name.txt" 2>&1 || printf '   %s failed (exit %s): see %s\n' "$name" "$?" "$OUT/$name.txt" | tee -a "$OUT/log"
    tail -n 40 "$OUT/$name.txt"
}

cd "$HERE"
step schema_size bench/schema_size.py --runs 3
step per_test_cost bench/per_test_cost.py --runs 7 --only nodb,shared,database,transaction
step seeded_reset_1 bench/seeded_reset.py --before "$HERE/src" --empty 1 --tables 300 --rows 200000 --rounds 3
step seeded_reset_5 bench/seeded_reset.py --before "$HERE/src" --empty 5 --tables 300 --rows 200000 --rounds 3
step plugin_cost bench/plugin_cost.py --runs 7
step first_test bench/first_test.py --a "$HERE" --b "$HERE" --runs 7
step first_test_cold bench/first_test.py --a "$HERE" --b "$HERE" --runs 5 --cold
step migration_edit bench/migration_edit.py --a "$HERE" --b "$HERE" --runs 5
step migration_edit_20ms bench/migration_edit.py --a "$HERE" --b "$HERE" --runs 5 --sleep-ms 20
step first_test_run bench/first_test.py --a "$HERE" --b "$HERE" --runs 7 --runner testlane
step migration_edit_run bench/migration_edit.py --a "$HERE" --b "$HERE" --runs 5 --runner testlane
step migration_edit_20ms_run bench/migration_edit.py --a "$HERE" --b "$HERE" --runs 5 --sleep-ms 20 --runner testlane
step run_phases bench/run_phases.py --runs 5
printf '== %s  done  load:%s  outputs in %s\n' "$(date -u +%H:%M:%S)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$OUT" | tee -a "$OUT/log"
