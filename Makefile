# The README's commands. Each target creates .venv when missing and installs into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test tools lint unit integration e2e bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rotator demo

lint: $(STAMP)
	$(BIN)/ruff check rotator tests deploy
	$(BIN)/ruff format --check rotator tests deploy
	$(BIN)/mypy

# The Debian tools the tests run as real servers (Alertmanager, promtool, systemd-analyze):
# installed when missing as root or with passwordless sudo, else the command to run is printed.
tools:
	tests/ensure-tools.sh

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

integration: tools $(STAMP)
	$(BIN)/pytest tests/integration -q

e2e: tools $(STAMP)
	$(BIN)/pytest tests/e2e -q

# Everything CI checks: the tools first (a missing one stops the run in seconds), then lint and
# types, then every test layer; the unit layer must cover every branch of the pure decisions
# (plan.py, lifecycle.py, peers.py, records.py).
# Prerequisites run in the order written.
PURE := --cov=rotator.plan --cov=rotator.lifecycle --cov=rotator.peers --cov=rotator.records
test: tools lint
	$(BIN)/pytest -q tests/unit $(PURE) --cov-branch --cov-fail-under=100 \
		--cov-report=term-missing:skip-covered
	$(BIN)/pytest -q tests/integration tests/e2e tests/deploy

# The `bench` extra (matplotlib, for the chart) on top of the test install; redone with it.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Fleet-scale timings, memory and Vault traffic (bench/README.md); not part of `make test`.
# BENCH_ARGS passes options on, e.g. make bench BENCH_ARGS='--quick --tokens 40 --fleet 100'.
bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
