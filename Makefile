# riskguard — two commands do all the set-up on a fresh machine: `make run` and `make test`.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
DEMO   := out/demo

.PHONY: install lock lint system-deps test test-unit test-reliability run replay-demo bench clean kafka-up kafka-down

install: $(STAMP)

# Every dependency (runtime, dev, and setuptools to build the project) comes from the lock, hash-checked;
# then the project itself, editable, built with the locked setuptools and without fetching anything.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Refreshes $(LOCK) from pyproject.toml (runtime + the extras below, every platform, Python 3.11), keeping the
# versions already locked where they still fit; LOCK_ARGS=--upgrade (or "--upgrade-package NAME") bumps them.
# The backtest extras (pandas, vectorbt, nautilus_trader: docs/backtesting.md) are locked, so `make install`
# installs them and `make test` tests the adapters. requirements-worker.lock is the runtime part alone, at the
# same versions (compiled under $(LOCK) as constraints): what deploy/Dockerfile installs, hash-checked.
LOCK_EXTRAS := dev backtest vectorbt nautilus
lock: install
	$(BIN)/uv pip compile --quiet --custom-compile-command "make lock" --universal --python-version 3.11 --generate-hashes \
		$(foreach extra,$(LOCK_EXTRAS),--extra $(extra)) $(LOCK_ARGS) pyproject.toml -o $(LOCK)
	$(BIN)/uv pip compile --quiet --custom-compile-command "make lock" --universal --python-version 3.11 --generate-hashes \
		-c $(LOCK) pyproject.toml -o requirements-worker.lock

lint: install
	$(BIN)/ruff check streams schemas tests bench examples
	$(BIN)/ruff format --check streams schemas tests bench examples
	$(BIN)/mypy --strict streams/core streams/worker streams/audit schemas streams/client.py streams/backtest.py streams/nautilus.py examples

KAFKA_TEST_PORT ?= 19092

# System tools the tests drive: Debian's chromium (the operator page in a headless browser) and promtool
# (Debian's prometheus package: `promtool check config`). Installed with apt-get when missing and root.
SYSTEM_DEPS := chromium:chromium promtool:prometheus
system-deps:
	@missing=; for pair in $(SYSTEM_DEPS); do command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "system-deps: apt-get install$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
		echo "system-deps: missing$$missing (Debian: sudo apt-get install --no-install-recommends$$missing); the tests that need them fail" >&2; \
	fi
	@$(MAKE) --no-print-directory $(COMPOSE_SPEC)

# The Compose Specification's own validator (compose-go, the loader inside `docker compose`): checks
# docker-compose.yml where the `docker compose` plugin is missing. Built once by Go from the Go proxy.
COMPOSE_GO   := github.com/compose-spec/compose-go/v2/cmd@v2.4.4
COMPOSE_SPEC := .cache/bin/compose-spec
$(COMPOSE_SPEC):
	@if docker compose version >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v go >/dev/null; then echo "system-deps: no docker compose and no Go to build compose-spec; the compose test fails" >&2; exit 0; fi; \
	mkdir -p .cache/gobin && GOBIN=$(CURDIR)/.cache/gobin go install $(COMPOSE_GO) && \
	mkdir -p .cache/bin && mv .cache/gobin/cmd $(COMPOSE_SPEC)

# Runs every test on one broker: the one answering on KAFKA_TEST_PORT; else, when a Docker engine answers,
# testcontainers' Kafka (started by the tests' fixture, tests/integration/brokers.py); else the local broker
# script, started once here for every xdist worker and stopped after.
test: lint system-deps
	@started=0; bootstrap=127.0.0.1:$(KAFKA_TEST_PORT); \
	if ! $(BIN)/python -c "import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(('127.0.0.1',$(KAFKA_TEST_PORT))))"; then \
		if [ "$$(KAFKA_BOOTSTRAP_SERVERS= $(BIN)/python -m tests.integration.brokers)" = testcontainers ]; then \
			bootstrap=; \
		else \
			$(BIN)/riskguard kafka up --port $(KAFKA_TEST_PORT) && started=1; \
		fi; \
	fi; \
	KAFKA_BOOTSTRAP_SERVERS=$$bootstrap $(BIN)/pytest -q -n 2 tests; rc=$$?; \
	if [ $$started = 1 ]; then $(BIN)/riskguard kafka down --port $(KAFKA_TEST_PORT); fi; \
	exit $$rc

# The reliability suite of docs/reliability.md on a large tape (about 100,000 events, 5 add/remove cycles):
# kill -9, workers joining and leaving, a broker restart, state loss, reprocessing, halt durability, poison
# pills, forged controls, SASL/SCRAM + TLS, then the input fuzzer at RELIABILITY_FUZZ_EXAMPLES. Starts the local broker like `test`; the figures (RELIABILITY
# lines) go to out/reliability.log. Serial on purpose: the figures are timings. Takes well over half an hour.
RELIABILITY_EVENTS ?= 100000
RELIABILITY_CYCLES ?= 5
# RELIABILITY_EXACTLY_ONCE=0 skips the exactly_once variants of tests 1-3.
RELIABILITY_EXACTLY_ONCE ?= 1
# The input fuzzer's random cases per topic and test (`make test` runs 200).
RELIABILITY_FUZZ_EXAMPLES ?= 5000
test-reliability: install
	@mkdir -p out; rm -f out/reliability.log; started=0; \
	if ! $(BIN)/python -c "import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(('127.0.0.1',$(KAFKA_TEST_PORT))))"; then \
		$(BIN)/riskguard kafka up --port $(KAFKA_TEST_PORT) && started=1; \
	fi; \
	KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_TEST_PORT) RISKGUARD_CRASH_EVENTS=$(RELIABILITY_EVENTS) \
	RISKGUARD_CRASH_CYCLES=$(RELIABILITY_CYCLES) RISKGUARD_CRASH_EXACTLY_ONCE=$(RELIABILITY_EXACTLY_ONCE) RISKGUARD_RELIABILITY_OUT=out/reliability.log \
	$(BIN)/pytest -q -rA --durations=0 tests/integration/test_crash.py tests/integration/test_reliability.py \
		tests/integration/test_security.py \
		"tests/integration/test_pipeline_parity.py::test_poison_pills_when_published_then_dead_lettered_with_origin_and_later_events_decided" \
		"tests/integration/test_pipeline_parity.py::test_controls_when_signed_forged_and_replayed_on_kafka_then_only_the_signed_one_acts"; \
	rc=$$?; \
	RISKGUARD_FUZZ_EXAMPLES=$(RELIABILITY_FUZZ_EXAMPLES) $(BIN)/pytest -q -s -p no:cacheprovider tests/unit/test_fuzz_inputs.py \
		| tee -a out/reliability.log | grep -E '^FUZZ|passed|failed'; fuzz=$${PIPESTATUS[0]}; \
	if [ $$started = 1 ]; then $(BIN)/riskguard kafka down --port $(KAFKA_TEST_PORT); fi; \
	grep -h '^RELIABILITY' out/reliability.log 2>/dev/null || true; \
	if [ $$rc = 0 ]; then rc=$$fuzz; fi; \
	exit $$rc

test-unit: install
	$(BIN)/pytest -q -n 2 tests/unit

# The main job on a local default: the local broker (unless KAFKA_BOOTSTRAP_SERVERS answers), a worker,
# a generated session (or DATA=../shared/data/sp500_daily_2018-01-02_2018-02-07.csv) published in order,
# decisions and halts shown live; Ctrl-C stops everything it started.
run: install
	$(BIN)/riskguard demo --config deploy/profiles/demo.yaml $(if $(DATA),--data $(DATA),)

# The same session through the in-process engine only, then audited from its log.
replay-demo: install
	@mkdir -p $(DEMO)
	$(BIN)/riskguard gen --symbols 60 --accounts 6 --days 3 --seed 7 --config deploy/profiles/demo.yaml --out $(DEMO)/tape.jsonl
	$(BIN)/riskguard replay $(DEMO)/tape.jsonl --config deploy/profiles/demo.yaml --out $(DEMO)/out.jsonl --show
	$(BIN)/riskguard verify $(DEMO)/tape.jsonl $(DEMO)/out.jsonl --config deploy/profiles/demo.yaml

# docs/performance.md: every benchmark, results in bench/results/latest.{json,md}; starts the local broker
# unless KAFKA_BOOTSTRAP_SERVERS answers. BENCH_ARGS="--only replay,latency", "--quick", "--profile".
bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

kafka-up: install
	$(BIN)/riskguard kafka up

kafka-down: install
	$(BIN)/riskguard kafka down

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
