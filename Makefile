# Everything runs from a local virtualenv; nothing but Python 3.11+ is needed on the machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-django-lts lint bench clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "pgqueue needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(BIN)/.installed  ## migrate, enqueue an order's jobs in one transaction, run a worker, show the history
	$(BIN)/pgqueue demo

test: $(BIN)/.installed  ## the whole test suite (an embedded PostgreSQL unless PGQUEUE_TEST_DSN is set)
	$(BIN)/python -m pytest

test-django-lts:  ## the Django integration tests again on Django 4.2 LTS, in a virtualenv of their own
	$(PYTHON) -m venv .venv-django42
	.venv-django42/bin/python -m pip install --quiet -e ".[dev]" "django>=4.2,<4.3"
	.venv-django42/bin/python -m pytest tests/integrations/test_django.py

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(BIN)/.installed  ## pgqueue vs PgQueuer vs Procrastinate (BENCH_ARGS=--quick: about two minutes)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
