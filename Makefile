# Hangar's entry points. `make run` starts the server; `make test` installs every test need and runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install run test test-deps lint bench clean

install: $(BIN)/hangar

$(BIN)/hangar: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(BIN)/hangar

run: install
	bash scripts/system-deps runtime
	$(BIN)/hangar serve $(ARGS)

test-deps: install
	bash scripts/system-deps test
	$(BIN)/python -m pip install --quiet -e '.[test,bench,cluster]'
	$(BIN)/python -m tests.support.phoenix install  # a real OTLP receiver, in its own .venv-otlp/

lint: test-deps
	$(BIN)/ruff check src tests examples bench
	$(BIN)/mypy

# With CI set, security and isolation tests may not skip (tests/conftest.py: HANGAR_REQUIRE_ISOLATION).
test: lint
	$(if $(CI),HANGAR_REQUIRE_ISOLATION=1 )$(BIN)/pytest $(PYTEST_ARGS)

bench: install
	command -v wrk >/dev/null || { [ "$$(id -u)" -ne 0 ] || apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .hangar .pytest_cache .ruff_cache .mypy_cache
