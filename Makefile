# Every target creates .venv from pyproject.toml when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck unit integration clean browser demo

# constraints.txt pins every package of the resolved set, so CI, a newcomer and the
# container install the same versions; `make lock` resolves them again.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,load]'
	touch $(STAMP)

# Resolve pyproject.toml's dependencies afresh (every extra) in a scratch venv and
# write the result to constraints.txt. Then run make test, and commit both files.
LOCK_VENV := .lock-venv

.PHONY: lock
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet '.[test,load]'
	{ echo "# Every package of the resolved set, pinned. Written by make lock; do not edit."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude gateway; } > constraints.txt
	rm -rf $(LOCK_VENV) build

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check gateway upstream_stub tests loadtests
	$(BIN)/ruff format --check gateway upstream_stub tests loadtests
	$(BIN)/hadolint Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -n auto -m "not integration"

integration: $(STAMP)
	$(BIN)/pytest -n auto -m integration

# Headless Chromium for tests/integration/test_browser_cors.py: installed when missing
# and the machine allows it (root with apt-get); otherwise the test is skipped.
browser:
	@if [ -x /usr/bin/chromium ]; then \
		echo "browser: $$(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "browser: installing chromium with apt-get"; \
		( export DEBIAN_FRONTEND=noninteractive; \
		  apt-get update -qq && apt-get install -y -qq chromium >/dev/null ) \
		|| echo "browser: installing chromium failed; the browser test will be skipped (under CI=true it fails)"; \
	else \
		echo "browser: /usr/bin/chromium is missing and installing it needs root and" \
			"apt-get; the browser test will be skipped (under CI=true it fails)"; \
	fi

test: lint typecheck browser
	$(BIN)/pytest -n auto

# The reference stack: users stub :8081, orders stub :8082, gateway :8080. Ctrl-C stops it.
demo: $(STAMP)
	$(BIN)/gateway demo

# Locust against a reference stack started for the run; reports under loadtests/results/.
# Override on the command line: make loadtest LOADTEST_USERS=50 LOADTEST_TIME=2m
LOADTEST_USERS ?= 20
LOADTEST_SPAWN ?= 5
LOADTEST_TIME ?= 30s
LOADTEST_MAX_FAILURE_RATIO ?= 0.01

.PHONY: loadtest
loadtest: $(STAMP)
	$(BIN)/python loadtests/run_loadtest.py --users $(LOADTEST_USERS) \
		--spawn-rate $(LOADTEST_SPAWN) --time $(LOADTEST_TIME) \
		--max-failure-ratio $(LOADTEST_MAX_FAILURE_RATIO)

# The benchmark: the users stub directly, a plain Flask + httpx passthrough and the
# gateway (4 policy variants, 10 to 10,000 routes), alternating; one table, and JSON
# under loadtests/results/. About 3 minutes; make bench BENCH_ARGS=--quick for ~30 s.
# Needs Redis on 127.0.0.1:6379 (BENCH_REDIS_URL); uses wrk when it is installed.
BENCH_WORKERS ?= 2
BENCH_THREADS ?= 8
BENCH_CONNECTIONS ?= 16
BENCH_ARGS ?=

.PHONY: bench
bench: $(STAMP)
	$(BIN)/python loadtests/bench.py --workers $(BENCH_WORKERS) --threads $(BENCH_THREADS) \
		--connections $(BENCH_CONNECTIONS) $(BENCH_ARGS)

# A flame graph of one gateway worker under wrk load with every policy on (py-spy);
# writes docs/perf/flame-all.svg. make profile PROFILE_ARGS="--gil --out /tmp/cpu.svg"
PROFILE_ARGS ?=

.PHONY: profile
profile: $(STAMP)
	$(BIN)/python loadtests/profile.py $(PROFILE_ARGS)

clean:
	rm -rf $(VENV) $(LOCK_VENV) .mypy_cache .pytest_cache .ruff_cache
