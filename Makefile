# orchestrator_db: `make run` for a demo, `make test` for the full gate.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# auto = SQLite, plus PostgreSQL when it is reachable (loudly reported if not).
ORCHESTRATOR_TEST_ENGINES ?= auto
export ORCHESTRATOR_TEST_ENGINES

.PHONY: install run demo test lint typecheck migration-gate pytest bench migrate downgrade seed clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Upgrade ./orchestrator.db (or $ORCHESTRATOR_DB_URL) and show the layer at work.
run: install migrate
	$(BIN)/orchestrator-db demo

## Lint, type check, migration round trip on both engines, then the test suite.
test: install lint typecheck migration-gate pytest

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

migration-gate: install
	$(BIN)/python -m tests.migration_gate

# Both cores: every engine configuration multiplies the suite. Tests that make
# clusters of their own (xdist_group "clusters") share one worker.
pytest: install
	$(BIN)/pytest -n 2 --dist loadgroup

# The peers it compares with come from the bench extra.
bench: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python -m bench

migrate: install
	$(BIN)/alembic upgrade head

downgrade: install
	$(BIN)/alembic downgrade -1

## Create the demo project, worker types and tickets (running it again changes nothing).
seed: install migrate
	$(BIN)/orchestrator-db seed

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache orchestrator.db orchestrator.db-wal orchestrator.db-shm
