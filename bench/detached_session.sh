#!/usr/bin/env bash
# A/B: a whole `pytest --it` session (one test using pg_conn) against a detached Postgres, alternating a
# "before" checkout (BEFORE=/path/to/checkout) and this one, 6 runs each; then counts the tl_ databases the
# sessions left on the detached server. Run from the repository root: BEFORE=/tmp/before bash bench/detached_session.sh
set -euo pipefail
ROOT=$(pwd)
V=$ROOT/.venv/bin
PROJECT=$(mktemp -d)
trap 'rm -rf "$PROJECT"' EXIT
printf '[project]\nname = "demo"\nversion = "0"\n\n[tool.testlane]\nservices = ["postgres"]\n' > "$PROJECT/pyproject.toml"
mkdir "$PROJECT/tests"
printf 'def test_db(pg_conn):\n    assert pg_conn.execute("SELECT 1").fetchone() == (1,)\n' > "$PROJECT/tests/test_one.py"
cd "$PROJECT"
export TESTLANE_DATA_DIR=/dev/shm/testlane-bench-detached-$$
$V/testlane services start postgres >/dev/null 2>&1
trap '$V/testlane services stop >/dev/null 2>&1; rm -rf "$TESTLANE_DATA_DIR" "$PROJECT"' EXIT
eval "$($V/testlane services env 2>/dev/null)"
export PYTEST_ADDOPTS="-p no:cacheprovider"
for _ in 1 2 3 4 5 6; do
  for side in before after; do
    if [ "$side" = before ]; then src=${BEFORE:?a before checkout}/src; else src=$ROOT/src; fi
    start=$(date +%s.%N)
    PYTHONPATH=$src $V/python -m pytest --it -q tests/test_one.py >/dev/null 2>&1 || echo "$side: session failed"
    echo "$side $(echo "$(date +%s.%N) - $start" | bc)"
  done
done
$V/python -c '
import os, psycopg
with psycopg.connect(os.environ["TESTLANE_POSTGRES_URL"]) as c:
    q = "SELECT count(*) FROM pg_database WHERE datname LIKE %s AND datname NOT LIKE %s"
    print("tl_ databases left on the detached server:", c.execute(q, ("tl\\_%", "tl\\_tpl\\_%")).fetchone()[0])
'
