# Two commands do all set-up on a fresh machine with Python 3.11:
#   make demo   create .venv, install testlane, run the chat example's integration lane (examples/chat)
#   make test   create .venv if needed, run lint, type check and testlane's whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv demo test lint typecheck suite bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	cd examples/chat && ../../$(BIN)/testlane run -- --lane it -v -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

# 2026-12-01 (later): 1428 tests in 9.7-10.9 min, the machine running ~2x slower than the day before by the benchmarks'
# anchors (pytest alone 0.45 against 0.23 ms a test). Before that:
# Two xdist workers on this 2-core machine: 1342 tests in 5.7-5.9 min (2026-12-01, one after the other with 06414f7's
# 1340 tests, which took 9.5-10.5 min: worksteal scheduling (pyproject addopts) and the suite's bytecode warm-up
# (tests/conftest.py, tests/helpers.py warm_bytecode); CPU 605-620 -> 435-455 s). Earlier: 832 tests in 5.7 min
# with the inner runs' foreign pytest plugins off (tests/helpers.py FOREIGN_PLUGINS_OFF), 9.4 min before.
suite: $(STAMP)
	$(BIN)/testlane run -- tests -p no:cacheprovider -n 2

test: lint typecheck suite

bench: $(STAMP)
	$(BIN)/python bench/startup.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
