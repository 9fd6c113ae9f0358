# Quick start: `make bench` (main job: the ML-100K comparison, regenerates results/)
#              `make test`  (the test suite)
# Both create .venv with the pinned environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS ?= -q
EXTRAS ?= torch,mxnet,surprise,bayes,cluster,plot,dev

.PHONY: env bench bench-paper bench-threads bench-tta gpu-check tune-ml100k tune-mlsmall tune-ml1m lint test test-modern test-pinned-tox benchmark clean-venv

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/pinned.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) -c requirements/pinned.txt -e '.[$(EXTRAS)]'
	touch $@

# The main job: the D2L reproduction + the ML-100K comparison of tuned models (resumable: rerun to
# continue; finished runs are kept), the report (results/README.md, CSVs, plots), the verdict, and a
# closing summary of what ran.  JOBS runs at a time; RERUN=1 reruns every run (regenerate from
# scratch); DATA_DIR defaults to $AUTOREC_DATA_DIR, else ../shared/data when it exists.
JOBS ?= 2
RESULTS ?= results
DATA_DIR ?= $(firstword $(AUTOREC_DATA_DIR) $(wildcard ../shared/data))
DATA_FLAG := $(if $(DATA_DIR),--data-dir $(DATA_DIR),)
RERUN_FLAG := $(if $(RERUN),--rerun,)
MAIN_SPECS = benchmarks/specs/d2l.toml benchmarks/specs/ml100k.toml
PAPER_SPECS = benchmarks/specs/mlsmall.toml benchmarks/specs/paper.toml

define run_specs
	$(BIN)/autorec-bench sweep $(1) --jobs $(JOBS) --out $(RESULTS)/raw $(DATA_FLAG) $(RERUN_FLAG) --summary $(RESULTS)/.$(2).json
	$(BIN)/autorec-bench verify --raw $(RESULTS)/raw --out $(RESULTS); if [ $$? -gt 1 ]; then exit 2; fi
	$(BIN)/autorec-bench report --raw $(RESULTS)/raw --out $(RESULTS) --recompute-splits $(DATA_FLAG) > /dev/null
	@echo
	@$(BIN)/autorec-bench summary $(RESULTS)/.$(2).json --results $(RESULTS) --regenerate "make $(2) RERUN=1"
endef

bench: env
	$(call run_specs,$(MAIN_SPECS),bench)

# The AutoRec paper's protocol on ML-1M and the same comparison on ml-latest-small (hours on 2 cores).
bench-paper: env
	$(call run_specs,$(PAPER_SPECS),bench-paper)

# Issue 14's measurements (one heavy job at a time, on an otherwise quiet machine):
# threads x OpenMP wait policy with 0-2 busy neighbours (36 min here) -> results/contention.{json,md};
# time to best validation RMSE on ML-1M in each training path (10 min) -> results/time_to_accuracy.md.
bench-threads: env
	$(BIN)/python -m benchmarks.contention --neighbours 0,1,2 --out $(RESULTS) $(DATA_FLAG)
bench-tta: env
	$(BIN)/autorec-bench sweep benchmarks/specs/tta.toml --jobs 1 --out $(RESULTS)/tta/raw $(DATA_FLAG) $(RERUN_FLAG)
	$(BIN)/python -m benchmarks.tta --raw $(RESULTS)/tta/raw --out $(RESULTS)/time_to_accuracy.md
# On a machine with NVIDIA GPUs only (never in CI): results/gpu.md, see scripts/gpu-check.
gpu-check:
	scripts/gpu-check

# Tuning (hours; resumable at any moment: rerun to continue).  The studies and the chosen configs
# land in results/tuning/<dataset>/; the specs read the configs from there.
TUNE = $(BIN)/autorec-bench tune --trials $(TRIALS) --threads 1 $(DATA_FLAG)
TUNE_MODELS = --model i-autorec@torch --model u-autorec@torch --model i-autorec@mxnet --model u-autorec@mxnet \
  --model bayesian-svdpp --model bayesian-mf --model biased-mf@numpy --model biased-mf@torch --model als \
  --model surprise-svd --model surprise-svdpp --model d2l-mf@torch --model bias-only
# The committed ML-100K and ml-latest-small AutoRec studies prune pooled (they were created before
# per-variant pruning); each also has a study pruned per variant beside it (split seed 0, 5% validation).
define tune_per_variant
	$(TUNE) --dataset $(1) --split random --seed 0 --valid-ratio 0.05 --model $(2)@torch --pruner per-variant \
	  --study $(2)-torch-random_test_ratio=0.1-seed0-valid0.05-per-variant
endef
tune-ml100k: env
	$(TUNE) --dataset ml-100k --split random --seed 0 --valid-ratio 0.05 $(TUNE_MODELS)
	$(call tune_per_variant,ml-100k,i-autorec)
	$(call tune_per_variant,ml-100k,u-autorec)
	$(TUNE) --dataset ml-100k --split random --seed 0 --valid-ratio 0.05 --model bayesian-svdpp \
	  --space benchmarks/specs/spaces/bayesian-long-chain.toml --study bayesian-svdpp-myfm-random_test_ratio=0.1-seed0-valid0.05-long-chain
tune-mlsmall: env
	$(TUNE) --dataset ml-latest-small --split random --seed 0 --valid-ratio 0.05 $(TUNE_MLSMALL_MODELS)
	$(call tune_per_variant,ml-latest-small,i-autorec)
	$(call tune_per_variant,ml-latest-small,u-autorec)
TUNE_ML1M = $(TUNE) --trials 20 --dataset ml-1m --split random --seed 0 --valid-ratio 0.1 --cold-start constant:3
# AutoRec on ML-1M trains on the sparse path with the native kernels (benchmarks/specs/paper.toml runs
# the same): the dense path costs 2.5x more per epoch (results/time_to_accuracy.md), and its first
# trial (L-BFGS, 1000 hidden units) took a minute an epoch of its 500 here.
tune-ml1m: env
	$(TUNE_ML1M) --model i-autorec@torch --model u-autorec@torch --set path=sparse --set 'extra={"sparse_kernel": "native"}'
	$(TUNE_ML1M) $(TUNE_ML1M_MF)
TRIALS ?= 60
# the models of benchmarks/specs/mlsmall.toml
TUNE_MLSMALL_MODELS = --model i-autorec@torch --model u-autorec@torch --model bayesian-svdpp --model bayesian-mf \
  --model biased-mf@numpy --model als --model surprise-svd --model bias-only
TUNE_ML1M_MF = --model bayesian-svdpp --model bayesian-mf --model biased-mf@numpy --model als --model bias-only

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pyright

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
