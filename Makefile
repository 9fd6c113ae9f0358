# Quick start: `make bench` (main job: the ML-100K comparison, regenerates results/)
#              `make test`  (the test suite)
# Both create .venv with the pinned environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS ?= -q
EXTRAS ?= torch,mxnet,surprise,plot,dev

.PHONY: env bench test test-all benchmark clean-venv

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/pinned.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) -c requirements/pinned.txt -e '.[$(EXTRAS)]'
	touch $@

bench: env
	$(BIN)/autorec-bench datasets
	$(BIN)/autorec-bench split --dataset ml-100k --split random --seed 0

test: env
	$(BIN)/python -m pytest

benchmark: env
	$(BIN)/python -m pytest benchmarks --benchmark-only --benchmark-autosave --benchmark-storage=results/benchmarks

clean-venv:
	rm -rf $(VENV)
