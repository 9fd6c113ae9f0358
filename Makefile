# Quick start: `make bench` (main job: the ML-100K comparison, regenerates results/)
#              `make test`  (the test suite)
# Both create .venv with the pinned environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS ?= -q
EXTRAS ?= torch,mxnet,surprise,bayes,cluster,plot,dev

.PHONY: env bench test test-modern test-pinned-tox benchmark clean-venv

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/pinned.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) -c requirements/pinned.txt -e '.[$(EXTRAS)]'
	touch $@

# The main job: the D2L reproduction + the ML-100K comparison (resumable: rerun to continue),
# then the verdict and the report (results/README.md, CSVs, plots).  `make bench JOBS=1` runs one
# run at a time; DATA_DIR defaults to $AUTOREC_DATA_DIR, else ../shared/data when it exists.
JOBS ?= 2
RESULTS ?= results
DATA_DIR ?= $(firstword $(AUTOREC_DATA_DIR) $(wildcard ../shared/data))
DATA_FLAG := $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

bench: env
	$(BIN)/autorec-bench sweep benchmarks/specs/d2l.toml benchmarks/specs/ml100k.toml --jobs $(JOBS) --out $(RESULTS)/raw $(DATA_FLAG)
	$(BIN)/autorec-bench report --raw $(RESULTS)/raw --out $(RESULTS) --recompute-splits $(DATA_FLAG)
	$(BIN)/autorec-bench verify --dataset ml-100k --raw $(RESULTS)/raw --out $(RESULTS); rc=$$?; \
	  $(BIN)/autorec-bench report --raw $(RESULTS)/raw --out $(RESULTS) > /dev/null; \
	  if [ $$rc -gt 1 ]; then exit $$rc; fi

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
