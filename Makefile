# procrustes: `make figures` (regenerate every figure and table from results/), `make test` (what CI runs).
# `make help` lists every target. Training is never implied: TRAIN=1 asks for it.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
DEVICE ?= auto
SHARED ?= ../shared/data
# 08_your_model trains its own demo (no committed results): run it by hand or under nbval, not in `make figures`
NOTEBOOKS := $(filter-out notebooks/08_%,$(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb)))
TRAIN ?= 0
export PYTHONUNBUFFERED := 1

.PHONY: help setup data figures reproduce test unit nbval bench gpu-check gpu-harvest harvest-import

help: ## this list
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:[^#]*## /\t/' | awk -F'\t' '{printf "  make %-15s %s\n", $$1, $$2}'
	@echo "  variables: PROFILE=$(PROFILE) (cpu: the committed results; paper: GPU; smoke: CI)  TRAIN=$(TRAIN) (1: train"
	@echo "             what PROFILE lacks before make figures)  DEVICE=$(DEVICE)  SMOKE=1 (gpu-* targets on a CPU)"

setup: $(VENV)/.installed ## create .venv and install the package with its tools

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Real data without internet: extract the archives of ../shared/data when they are there.
data: data/cifar10/train data/tiny-imagenet-200/wnids.txt ## extract ../shared/data's archives into data/

data/cifar10/train:
	@if [ -f $(SHARED)/cifar10-jpeg.tar.gz ]; then mkdir -p data/cifar10 && tar -xzf $(SHARED)/cifar10-jpeg.tar.gz -C data/cifar10; \
	else echo "no $(SHARED)/cifar10-jpeg.tar.gz: CIFAR-10 will be downloaded by torchvision into data/cifar10 when first used"; fi

data/tiny-imagenet-200/wnids.txt:
	@if [ -f $(SHARED)/tiny-imagenet-200-slice.tar.gz ]; then tar -xzf $(SHARED)/tiny-imagenet-200-slice.tar.gz -C data; \
	else echo "no $(SHARED)/tiny-imagenet-200-slice.tar.gz: put Tiny-ImageNet-200 in data/tiny-imagenet-200 to use it"; fi

# TRAIN=1: first train what PROFILE lacks (resumably), then regenerate; otherwise only regenerate from the stored
# results (missing runs are listed). How PROFILE was set (command line or environment) does not matter.
figures: setup ## regenerate every figure, table and claims.md of PROFILE from results/ (TRAIN=1: train what is missing first)
ifeq ($(TRAIN),1)
	$(MAKE) data
	$(PY) -m procrustes reproduce --profile $(PROFILE) --device $(DEVICE)
endif
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb ($(PROFILE))"; \
	  PROCRUSTES_PROFILE=$(PROFILE) PROCRUSTES_DEVICE=$(DEVICE) PROCRUSTES_TRAIN_MISSING=0 \
	    $(VENV)/bin/papermill --cwd notebooks -k python3 --no-progress-bar "$$nb" "$$nb" || exit 1; \
	  $(PY) -m procrustes.notebook strip "$$nb" || exit 1; \
	done

reproduce: ## on a GPU box: train what the paper profile lacks (resumable), then regenerate its figures
	$(MAKE) figures PROFILE=paper TRAIN=1 DEVICE=$(if $(filter auto,$(DEVICE)),cuda,$(DEVICE))

test: setup data unit nbval ## unit tests and nbval over the notebooks: what CI runs

unit: setup ## unit tests only
	$(PY) -m pytest tests -q

# nbval over the notebooks in the smoke profile, with a throw-away result store.
nbval: setup ## the notebooks under nbval, smoke profile, in a throw-away result store
	tmp=$$(mktemp -d) && PROCRUSTES_PROFILE=smoke PROCRUSTES_RESULTS=$$tmp PROCRUSTES_FIGURES=$$tmp/figures \
	  $(PY) -m pytest --nbval-lax -q -p no:cacheprovider notebooks; rc=$$?; rm -rf $$tmp; exit $$rc

bench: setup data ## training speed: ours against the reference pipeline in one process (BENCH_ARGS=...)
	$(PY) -m procrustes bench --device $(DEVICE) $(BENCH_ARGS)

# No `setup` prerequisite: a GPU machine without internet has torch in its python3 already.
# SMOKE=1: the CPU smoke form (seconds).
gpu-check: ## (GPU box) a short GPU check; SMOKE=1 on a CPU
	bash scripts/gpu_check.sh $(if $(filter 1,$(SMOKE)),--smoke)

# Train the most valuable missing paper runs within a GPU lease (HARVEST_BUDGET_S, default 540 s) and write one
# archive of their results into $OUT (no `setup`: see gpu-check). SMOKE=1: the CPU smoke form (about 90 s).
gpu-harvest: ## (GPU box, one command a lease) train the most valuable missing paper runs into the OUT folder; SMOKE=1 on a CPU
	bash scripts/gpu_harvest.sh $(if $(filter 1,$(SMOKE)),--smoke)

# Import a harvest archive into results/ (every entry checked first; nothing stored is ever replaced).
harvest-import: ## import a harvest archive into results/ (FILE=...; all or nothing, nothing replaced)
	@test -n "$(FILE)" || { echo "usage: make harvest-import FILE=path/to/harvest-paper-....tar.gz" >&2; exit 2; }
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m procrustes.harvest import "$(FILE)"
