# Everything installs from nothing: `make run` and `make test` create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
CONFIG ?= conf/digits.yaml

.PHONY: run test lint typecheck unit bench bench-quick ui clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch goes in first and pinned: pip takes the CPU wheel; left to the resolver it pulls a CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/hyperflow run $(CONFIG)

# lint-imports: the import contracts in pyproject.toml (flows -> components; adapters -> trial; ...).
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/hadolint --failure-threshold warning Dockerfile

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# Every test on two pytest-xdist workers, a whole file to a worker (module fixtures are built once);
# the session's one Prefect server and one MLflow server are shared by both (tests/conftest.py).
test: lint typecheck
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The fast lane: no servers, no flows, no searches through the CLI (under 2 minutes on 2 cores),
# on two pytest-xdist workers: its tests share no server, so they may run side by side.
unit: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m "not slow" -n 2

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/run_all.py

bench-quick: $(VENV)/.installed-dev
	$(BIN)/python bench/run_all.py --quick

ui: $(VENV)/.installed
	$(BIN)/hyperflow ui $(CONFIG)

clean:
	rm -rf $(VENV) mlflow.db mlruns .pytest_cache .mypy_cache .ruff_cache
