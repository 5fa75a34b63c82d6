# Two commands for a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= outputs/demo

.PHONY: venv demo test test-unit test-integration test-slow lint typecheck benchmarks-tiny clean mutation

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,dev]"
	touch $@

venv: $(VENV)/.installed

# Train the three models on the shipped sample catalog, then score the held-out catalog with each;
# the last line printed is the page comparing them (each model's report.html is linked from it).
demo: venv
	$(PY) -m jobs.train --catalog data/sample_catalog --output $(OUT)/models --config local
	$(PY) -m jobs.score --catalog data/heldout_catalog --model $(OUT)/models/custom_cnn --output $(OUT)/scores/custom_cnn --config local --set predict.overwrite=true
	$(PY) -m jobs.score --catalog data/heldout_catalog --model $(OUT)/models/mobilenet_v2 --output $(OUT)/scores/mobilenet_v2 --config local --set predict.overwrite=true
	$(PY) -m jobs.score --catalog data/heldout_catalog --model $(OUT)/models/efficientnet_lite0 --output $(OUT)/scores/efficientnet_lite0 --config local --set predict.overwrite=true
	$(PY) -m jobs.summarize $(OUT)/scores/custom_cnn $(OUT)/scores/mobilenet_v2 $(OUT)/scores/efficientnet_lite0 --page $(OUT)/index.html

# ruff (lint + format) over the tree; mypy --strict over models/ and pipeline/ (pyproject.toml).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

test-unit: venv
	$(PY) -m pytest -m "not integration and not slow"

test-integration: venv
	$(PY) -m pytest -m "integration and not slow"

test-slow: venv
	$(PY) -m pytest -m slow

# Unit, then integration, then slow: each must pass (STYLE.md §6).
test: test-unit test-integration test-slow

clean:
	rm -rf outputs .pytest_cache

# Mutation testing (mutmut, fast unit tests only) over [tool.mutmut] only_mutate in pyproject.toml;
# starts from scratch each time, then prints the kill score per module. 5 to 15 min on 2 shared cores.
mutation: venv
	rm -rf mutants
	nice -n 10 $(VENV)/bin/mutmut run --max-children 2 || true
	$(VENV)/bin/mutmut results --all true | $(PY) benchmarks/mutation_scores.py
