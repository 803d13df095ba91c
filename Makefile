# riskguard — two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= ../shared/data
DEMO   := out/demo

.PHONY: install lint test test-unit run bench clean kafka-up kafka-down

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

lint: install
	$(BIN)/ruff check streams schemas tests bench
	$(BIN)/mypy --strict streams/core schemas

test: lint
	$(BIN)/pytest -q -n 2 tests

test-unit: install
	$(BIN)/pytest -q -n 2 tests/unit

# The main job on a local default: a generated session through the guard engine, decisions and
# halts shown as they happen, then verified from the log.
run: install
	@mkdir -p $(DEMO)
	$(BIN)/riskguard gen --symbols 60 --accounts 6 --days 3 --seed 7 --config deploy/profiles/demo.yaml --out $(DEMO)/tape.jsonl
	$(BIN)/riskguard replay $(DEMO)/tape.jsonl --config deploy/profiles/demo.yaml --out $(DEMO)/out.jsonl --show
	$(BIN)/riskguard verify $(DEMO)/tape.jsonl $(DEMO)/out.jsonl --config deploy/profiles/demo.yaml

bench: install
	$(BIN)/python bench/replay_throughput.py

kafka-up: install
	$(BIN)/riskguard kafka up

kafka-down: install
	$(BIN)/riskguard kafka down

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
