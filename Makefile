# Two entry points: `make demo` trains PPO on CartPole-v1 and prints the evaluated mean return;
# `make test` runs the linters and the test suite. Both install into a local virtualenv first.
# `make docs` builds the documentation site into site/ (strict: a broken reference fails), `make docs-serve`
# serves it with live reload.
#
# CONSTRAINTS pins the CPU build of torch on machines that carry it locally; set CONSTRAINTS= to let pip pick
# any torch in the range pyproject.toml allows.

PYTHON ?= python3
VENV ?= .venv
# pytest-xdist workers of `make test` (the suite runs in about 7.5 min on two cores, 13 min in one process:
# TEST_WORKERS=0); the Ray modules share one worker (--dist loadgroup)
TEST_WORKERS ?= 2
CONSTRAINTS ?= constraints.txt
BIN := $(VENV)/bin
PIP_CONSTRAINTS := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)

.PHONY: install demo test bench learning docs docs-serve clean

$(VENV)/.installed: pyproject.toml setup.py shoal/emulation/_rowcopy.c $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(PIP_CONSTRAINTS) -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/shoal train CartPole-v1 --total-steps 150000 --seed 1 --run-dir runs/cartpole-demo --overwrite --eval-episodes 20

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

bench: install
	for script in benchmarks/*.py; do \
		case $$script in */common.py|*/__init__.py|*/learning.py) continue;; esac; \
		echo "== $$script"; $(BIN)/python $$script || exit 1; \
	done

docs: install
	$(BIN)/mkdocs build --strict --site-dir site

docs-serve: install
	$(BIN)/mkdocs serve

# The learning-quality suite's quick mode (about 20 minutes); the full mode takes hours:
# $(BIN)/python benchmarks/learning.py
learning: install
	$(BIN)/pip install --quiet $(PIP_CONSTRAINTS) -e ".[test,bench]"
	$(BIN)/python benchmarks/learning.py --quick

clean:
	rm -rf $(VENV) site runs .pytest_cache .ruff_cache .hypothesis build
	find shoal -name '*.so' -delete
