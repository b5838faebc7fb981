# procrustes: `make figures` (regenerate every figure and table from results/), `make test` (what CI runs).
# `make help` lists every target. Training is never implied: TRAIN=1 asks for it.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
DEVICE ?= auto
SHARED ?= ../shared/data
# 08_your_model trains its own demo: its committed outputs come from one run of it by hand (it dates them); nbval runs
# it at smoke size; `make figures` leaves it alone
NOTEBOOKS := $(filter-out notebooks/08_%,$(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb)))
# the notebooks of the paper-profile runs a CPU trains (docs/paper-protocol.md): once results/paper holds a finished
# run, `make figures` also runs them with profile=paper into figures/paper/ (executed copies in figures/paper/notebooks/),
# and every other notebook that has a copy there (`make figures PROFILE=paper` runs them all)
PAPER_NOTEBOOKS := $(filter notebooks/02_% notebooks/03_% notebooks/04_% notebooks/05_%,$(NOTEBOOKS))
# the notebooks `make figures` runs for PROFILE: all, except the selection study (09) for paper, which has no
# selection grid (no unused training images for a validation split; its MFW rows use the choices made at cpu scale)
PROFILE_NOTEBOOKS := $(if $(filter paper,$(PROFILE)),$(filter-out notebooks/09_%,$(NOTEBOOKS)),$(NOTEBOOKS))
TRAIN ?= 0
export PYTHONUNBUFFERED := 1

# User values reach the recipes' shells as environment variables ("$$FILE", $$CARRY: the shell expands them once,
# as data, with word splitting and globbing for CARRY), never pasted into the shell text, where a file name such as
# h`touch x`.tar.gz would run as a command.
# PROFILE, DEVICE, TRAIN and BENCH_ARGS likewise ("$$PROFILE"; $$BENCH_ARGS unquoted: words, never commands).
export FILE CARRY PROFILE DEVICE TRAIN BENCH_ARGS

.PHONY: help setup data data-profile figures reproduce test lint unit nbval bench gpu-check gpu-prepare gpu-harvest harvest-import park

help: ## this list
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:[^#]*## /\t/' | awk -F'\t' '{printf "  make %-15s %s\n", $$1, $$2}'
	@echo "  variables: PROFILE=$$PROFILE (cpu: the committed results; paper: the paper's protocol; smoke: CI)  TRAIN=$$TRAIN"
	@echo "             (1: train what PROFILE lacks before make figures)  DEVICE=$$DEVICE  SMOKE=1 (gpu-* targets on a CPU)"

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

# What our JPEG copy of CIFAR-10 is (quality, chroma subsampling, bytes an image): notebook 05 cites it beside the
# fidelity rows. Kept as it is when the files and the measurement are unchanged.
data-profile: results/data_profile/cifar10.json ## measure the JPEG copy of CIFAR-10 (IJG quality, chroma subsampling) for notebook 05
results/data_profile/cifar10.json: | setup data
	$(PY) -m procrustes.training.data_profile data/cifar10

# TRAIN=1: first train what PROFILE lacks (resumably), then regenerate; otherwise only regenerate from the stored
# results (missing runs are listed). How PROFILE was set (command line or environment) does not matter. PROFILE=cpu
# (the default) rewrites the committed notebooks, figures/ and the README's results, then figures/paper/ from the
# stored paper runs when there is one; another profile writes figures/<profile>/ only (scripts/run_notebooks.sh).
figures: setup ## regenerate every figure, table, claims.md and the README's results of PROFILE from results/ (TRAIN=1: train what is missing first)
	@$(PY) -m procrustes.results.notebook check-profile "$$PROFILE"
ifeq ($(TRAIN),1)
	$(MAKE) data
	$(PY) -m procrustes reproduce --profile "$$PROFILE" --device "$$DEVICE"
endif
	@PY=$(PY) bash scripts/run_notebooks.sh "$$PROFILE" $(PROFILE_NOTEBOOKS)
	@if [ "$$PROFILE" = cpu ]; then \
	  n=$$($(PY) -m procrustes.results.notebook stored paper) || exit 1; \
	  nbs=$$(for nb in $(NOTEBOOKS); do case " $(PAPER_NOTEBOOKS) " in *" $$nb "*) echo "$$nb";; \
	    *) if [ -e "$${PROCRUSTES_FIGURES:-figures}/paper/notebooks/$${nb##*/}" ]; then echo "$$nb"; fi;; esac; done); \
	  if [ "$$n" -gt 0 ]; then PY=$(PY) bash scripts/run_notebooks.sh paper $$nbs || exit 1; \
	  else echo "== no finished paper run stored: figures/paper/ left as it is"; fi; \
	  $(PY) -m procrustes.results.readme; fi

reproduce: ## on a GPU box: train what the paper profile lacks (resumable), then regenerate its figures
	$(MAKE) figures PROFILE=paper TRAIN=1 DEVICE="$$(if [ "$$DEVICE" = auto ]; then echo cuda; else echo "$$DEVICE"; fi)"

test: setup data lint unit nbval ## ruff, unit tests and nbval over the notebooks: what CI runs

lint: setup ## ruff over the package, tests, scripts and notebooks (pyproject.toml: line length 140, pycodestyle + pyflakes)
	$(VENV)/bin/ruff check procrustes tests scripts notebooks

unit: setup ## unit tests only
	$(PY) -m pytest tests -q

# nbval over the notebooks in the smoke profile, with a throw-away result store.
nbval: setup ## the notebooks under nbval, smoke profile, in a throw-away result store
	tmp=$$(mktemp -d) && PROCRUSTES_PROFILE=smoke PROCRUSTES_RESULTS=$$tmp PROCRUSTES_FIGURES=$$tmp/figures \
	  $(PY) -m pytest --nbval-lax -q -p no:cacheprovider notebooks; rc=$$?; rm -rf $$tmp; exit $$rc

bench: setup data ## training speed: ours against the reference pipeline in one process (BENCH_ARGS=...)
	$(PY) -m procrustes bench --device "$$DEVICE" $$BENCH_ARGS

# No `setup` prerequisite: a GPU machine without internet has torch in its python3 already.
# A standalone check of a GPU (bench against the reference pipeline, a 3-epoch eager paper run, a short packing
# bench); `make gpu-harvest` runs its own short check first, so a harvest needs no gpu-check. SMOKE=1: the CPU smoke form (seconds).
gpu-check: ## (on a GPU) a standalone check of the GPU (gpu-harvest runs its own short one); SMOKE=1 on a CPU
	bash scripts/gpu_check.sh $(if $(filter 1,$(SMOKE)),--smoke)

# On this machine, before a GPU session (after `make setup`): record the commit the tree will train with
# (store.git_commit: +dirty for changes outside store.DATA_PATHS; .procrustes-commit: the copied tree has no .git),
# put the CIFAR-10 archive into data/, and with CARRY="harvest-carry-....tar ..." (the carry file(s) the last lease
# returned) make them the checkpoints the next lease resumes (older ones move to data/harvest-carry-old/).
# Prints what to run.
gpu-prepare: ## on this machine, before a GPU session: record the commit, stage the data and the carried checkpoints (CARRY=...)
	@$(PY) -c 'from procrustes.training.store import git_commit; print(git_commit())' > .procrustes-commit
	@test -f data/cifar10-jpeg.tar.gz || cp $(SHARED)/cifar10-jpeg.tar.gz data/
	@mkdir -p data/harvest-carry
	@if [ -n "$$CARRY" ]; then \
	  for f in $$CARRY; do test -f "$$f" || { echo "gpu-prepare: no carry file $$f" >&2; exit 2; }; done; \
	  mkdir -p data/harvest-carry-old; \
	  for f in data/harvest-carry/*.tar; do [ -e "$$f" ] && mv -- "$$f" data/harvest-carry-old/; done; \
	  for f in $$CARRY; do cp -- "$$f" data/harvest-carry/ || exit 2; done; fi
	@echo "commit $$(cat .procrustes-commit); checkpoints to resume: $$(ls data/harvest-carry/ | tr '\n' ' ')"
	@echo "on the lent GPU, one command (timeout 600 s): make gpu-harvest"
	@echo "  carry: data/cifar10-jpeg.tar.gz data/harvest-carry .procrustes-commit"
	@echo "back here: make harvest-import FILE=<OUT>/harvest-paper-<stamp>.tar.gz, commit results/paper,"
	@echo "  then make gpu-prepare CARRY=\"<OUT>/harvest-carry-paper-<stamp>*.tar\" before the next lease"

# ON the lent GPU, the one command of a lease (timeout 600 s; `make gpu-prepare` here first): within
# HARVEST_BUDGET_S (540 s) a short GPU check, the bench, the printed plan, the most valuable missing paper runs
# (whole where they fit, else carried), and into $OUT: harvest-console.log, the results archive (rewritten as
# each run finishes) and the carry file of unfinished runs' checkpoints. SMOKE=1: the CPU smoke form (90 s x how
# busy the CPU is).
gpu-harvest: ## (on a GPU, the one command of a GPU session: docs/gpu.md) train the most valuable missing paper runs into the OUT folder; SMOKE=1 on a CPU
	bash scripts/gpu_harvest.sh $(if $(filter 1,$(SMOKE)),--smoke)

# Import a harvest archive into results/ (every entry checked first; nothing stored is ever replaced).
harvest-import: ## import a harvest archive into results/ (FILE=...; all or nothing, nothing replaced)
	@test -n "$$FILE" || { echo "usage: make harvest-import FILE=path/to/harvest-paper-....tar.gz" >&2; exit 2; }
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m procrustes.tooling.harvest import -- "$$FILE"

# A run longer than a session: its checkpoint (git-ignored, rewritten every epoch) must travel in a commit.
# The profile reaches the tool through the environment, never through shell text.
park: export PARK_PROFILE = $(if $(filter command line environment,$(origin PROFILE)),$(PROFILE),paper)
park: ## stage the checkpoints of unfinished runs (PROFILE=paper unless given) for a commit: the next machine resumes them
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m procrustes.tooling.park --profile "$$PARK_PROFILE"
