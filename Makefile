# fl_tff: `make run` trains the default experiment, `make test` runs the test suite.
# Both create the virtualenv .venv/ from the pinned requirements when it is missing.
# See BUILD_NOTES.md for why TFF is installed with --no-deps.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fl_tff-installed
ARGS ?=
PYTEST_ARGS ?=
TEST_PROCESSES ?= auto

.PHONY: venv run test test-fast clean-venv

venv: $(STAMP)

$(STAMP): requirements/base.txt requirements/tff.txt requirements/dev.txt setup.py
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if (3, 10) <= v[:2] < (3, 12) else "fl_tff needs Python 3.10-3.11 (TFF 0.87 supports 3.9-3.11; fl_tff uses 3.10 syntax); found %d.%d: set PYTHON=python3.11" % v[:2])'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/base.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/tff.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(PY) -c 'import tensorflow_federated as tff; print("installed TFF", tff.__version__)'
	@touch $@

run: venv
	$(PY) -m experiments.train $(ARGS)

# Every test, spread over the machine's cores (pytest-xdist: one TFF worker per test process).
test: venv
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist worksteal $(PYTEST_ARGS)

# What to run after each change: the tests that start no TFF worker, trace no federated
# computation and run no experiment (tests/conftest.py marks the others `integration`).
test-fast: venv
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
