# Quick start: `make bench` (main job: the ML-100K comparison, regenerates results/)
#              `make test`  (the test suite)
# Both create .venv with the pinned environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS ?= -q
EXTRAS ?= torch,mxnet,surprise,plot,dev

.PHONY: env bench test test-modern test-pinned-tox benchmark clean-venv

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

# tox (in its own small venv) for the modern stack: numpy 2.x, no mxnet.
$(VENV)-tools/.installed:
	$(PYTHON) -m venv $(VENV)-tools
	$(VENV)-tools/bin/python -m pip install $(PIP_FLAGS) 'tox>=4,<5'
	touch $@

test-modern: $(VENV)-tools/.installed
	$(VENV)-tools/bin/tox -e modern

test-pinned-tox: $(VENV)-tools/.installed
	$(VENV)-tools/bin/tox -e pinned

benchmark: env
	$(BIN)/python -m pytest benchmarks --benchmark-only --benchmark-autosave --benchmark-storage=results/benchmarks

clean-venv:
	rm -rf $(VENV) $(VENV)-tools .tox
