# taxiway's project plumbing. Needs only `python3` (3.11+) and GNU make.
#
#   make run     validate the bundled example app, show its machines, and run it (Ctrl-C stops)
#   make test    lint (ruff) and run the test suite; extra pytest flags go in PYTEST_ARGS
#   make bench   every benchmark: validate, up -d, autostart, the edge (alone and beside a DNS
#                flood), deploys, docker compose
#                (each vs named peers), open dashboards against the edge
#   make clean   remove the virtualenv and every cache
#
# Every target that runs taxiway first makes sure .venv exists and holds an editable install
# of the package with its test extras; that install is redone only when pyproject.toml changes.

PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
# Touched after a successful install; older than pyproject.toml means "install again".
STAMP       := $(VENV)/.installed
EXAMPLE     := examples/hello/fly.toml
PYTEST_ARGS ?=
# Serial by default. `make test PYTEST_WORKERS="-n 3 --dist loadfile"` runs three
# pytest-xdist workers (whole files each) in about half the time on two cores, but some
# tests' apps bind fixed ports (8080, as real apps do) and can then meet in two workers.
PYTEST_WORKERS ?=
BENCH_ARGS  ?=

.DEFAULT_GOAL := help
.PHONY: help venv run test bench clean

help:
	@echo "make run    validate $(EXAMPLE), print its machines, and run it"
	@echo "make test   ruff check + pytest (PYTEST_ARGS='-k name -x' to pass flags)"
	@echo "make bench  every benchmark in benchmarks/ against its peers (BENCH_ARGS: validate's)"
	@echo "make venv   create $(VENV) and install taxiway into it (done by the targets above)"
	@echo "make clean  remove $(VENV) and caches"

venv: $(STAMP)

# The interpreter is the marker that the venv exists. A failed `venv` (Debian/Ubuntu without
# python3-venv leaves a venv with no pip) is removed again so the next run starts clean.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "taxiway needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) -V 2>&1)." >&2; \
	  echo "Run make with PYTHON=/path/to/python3.11 (or newer)." >&2; exit 1; }
	@echo "creating $(VENV) with $$($(PYTHON) -V 2>&1)"
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "'$(PYTHON) -m venv' failed; on Debian/Ubuntu install the python3-venv package." >&2; \
	  exit 1; }

# Order-only on the interpreter: a venv that exists is never a reason to reinstall by itself.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

# `run` validates the example, prints the machines each process group gets, then starts the
# app in the foreground (Ctrl-C stops it gracefully).
run: $(STAMP)
	$(BIN)/taxiway config validate -c $(EXAMPLE)
	$(BIN)/taxiway config machines -c $(EXAMPLE)
	$(BIN)/taxiway up -c $(EXAMPLE)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/validate_speed.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/autostart.py
	$(BIN)/python benchmarks/edge.py
	$(BIN)/python benchmarks/dns_flood.py
	$(BIN)/python benchmarks/deploy.py
	$(BIN)/python benchmarks/compose.py
	$(BIN)/python benchmarks/dashboard_tabs.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build dist src/*.egg-info benchmarks/.cache
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
